#include "blip2_weights.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "errors.h"
#include "gguf.h"
#include "ggml-alloc.h"

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace minigpt {
namespace {

struct GgufFree { void operator()(gguf_context* g) const { gguf_free(g); } };
struct FileClose { void operator()(FILE* f) const { std::fclose(f); } };

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw NativeError("ERR_PROJECTOR_LOAD", "BLIP-2 projector " + path + ": " + what);
}

class Reader {
 public:
  Reader(const std::string& path, gguf_context* g, ggml_context* meta) : path_(path), g_(g), meta_(meta) {}

  uint32_t U32(const char* key) {
    int64_t id = gguf_find_key(g_, key);
    if (id < 0) Fail(path_, std::string("missing key ") + key);
    if (gguf_get_kv_type(g_, id) != GGUF_TYPE_UINT32) Fail(path_, std::string("key ") + key + " must be uint32");
    return gguf_get_val_u32(g_, id);
  }
  uint32_t U32Or(const char* key, uint32_t fallback) { return gguf_find_key(g_, key) < 0 ? fallback : U32(key); }
  float F32(const char* key, float fallback) {
    int64_t id = gguf_find_key(g_, key);
    if (id < 0) return fallback;
    if (gguf_get_kv_type(g_, id) != GGUF_TYPE_FLOAT32) Fail(path_, std::string("key ") + key + " must be float32");
    return gguf_get_val_f32(g_, id);
  }
  std::string Str(const char* key, const std::string& fallback) {
    int64_t id = gguf_find_key(g_, key);
    if (id < 0) return fallback;
    if (gguf_get_kv_type(g_, id) != GGUF_TYPE_STRING) Fail(path_, std::string("key ") + key + " must be a string");
    return gguf_get_val_str(g_, id);
  }
  std::array<float, 3> F32x3(const char* key, std::array<float, 3> fallback) {
    int64_t id = gguf_find_key(g_, key);
    if (id < 0) return fallback;
    if (gguf_get_kv_type(g_, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g_, id) != GGUF_TYPE_FLOAT32 || gguf_get_arr_n(g_, id) != 3)
      Fail(path_, std::string("key ") + key + " must be an array of 3 float32");
    std::array<float, 3> out;
    std::memcpy(out.data(), gguf_get_arr_data(g_, id), sizeof out);
    return out;
  }

  // Which types a tensor may have: what the graph's ops accept for it without asserting.
  enum class Allowed { F32, F32OrF16, Matrix };

  // The tensor `name` with exactly the shape `ne` (trailing 1s implied) and an allowed type:
  // matrices that feed mul_mat may be f16 or quantized; norms, biases and embeddings that are
  // added, multiplied or concatenated with f32 activations must be f32.
  ggml_tensor* Tensor(const std::string& name, std::initializer_list<int64_t> ne, Allowed allowed = Allowed::F32) {
    ggml_tensor* t = ggml_get_tensor(meta_, name.c_str());
    if (!t) Fail(path_, "missing tensor " + name);
    int i = 0;
    for (int64_t n : ne) {
      if (t->ne[i] != n) Fail(path_, "tensor " + name + " has the wrong shape (dimension " + std::to_string(i) + " is " + std::to_string(t->ne[i]) + ", expected " + std::to_string(n) + ")");
      ++i;
    }
    for (; i < GGML_MAX_DIMS; ++i)
      if (t->ne[i] != 1) Fail(path_, "tensor " + name + " has too many dimensions");
    const bool f32 = t->type == GGML_TYPE_F32, f16 = t->type == GGML_TYPE_F16;
    const bool quant = t->type == GGML_TYPE_Q8_0 || t->type == GGML_TYPE_Q4_0 || t->type == GGML_TYPE_Q4_1 ||
                       t->type == GGML_TYPE_Q5_0 || t->type == GGML_TYPE_Q5_1;
    const bool ok = f32 || (allowed != Allowed::F32 && f16) || (allowed == Allowed::Matrix && quant);
    if (!ok)
      Fail(path_, "tensor " + name + " has type " + ggml_type_name(t->type) + ", which is not allowed there");
    return t;
  }
  Linear Lin(const std::string& name, int64_t in, int64_t out) {
    return {Tensor(name + ".weight", {in, out}, Allowed::Matrix), Tensor(name + ".bias", {out})};
  }
  Norm LayerNorm(const std::string& name, int64_t n) { return {Tensor(name + ".weight", {n}), Tensor(name + ".bias", {n})}; }

 private:
  std::string path_;
  gguf_context* g_;
  ggml_context* meta_;
};

void Positive(const std::string& path, const char* what, uint32_t v) {
  if (v == 0 || v > (1u << 20)) Fail(path, std::string(what) + " must be a positive size, got " + std::to_string(v));
}

#if !defined(_WIN32)
// Maps the whole file read-only; the weights are used where they lie.
std::shared_ptr<void> MapFile(const std::string& path, size_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return nullptr;
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return nullptr;
  }
  void* addr = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (addr == MAP_FAILED) return nullptr;
  *size = size_t(st.st_size);
  const size_t len = *size;
  return std::shared_ptr<void>(addr, [len](void* p) { ::munmap(p, len); });
}
#endif

}  // namespace

namespace {
bool MapOntoCpu(Blip2Weights& w, const std::string& path, gguf_context* g, ggml_backend_t backend) {
#if defined(_WIN32)
  return false;
#else
  ggml_backend_dev_t dev = ggml_backend_get_device(backend);
  ggml_backend_dev_props props;
  ggml_backend_dev_get_props(dev, &props);
  if (!props.caps.buffer_from_host_ptr || ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) return false;
  size_t file_size = 0;
  auto mapping = MapFile(path, &file_size);
  if (!mapping) return false;
  const size_t data_offset = gguf_get_data_offset(g);
  if (data_offset >= file_size) return false;
  auto* base = static_cast<uint8_t*>(mapping.get()) + data_offset;
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
    ggml_tensor* t = ggml_get_tensor(w.ctx.get(), gguf_get_tensor_name(g, i));
    if (gguf_get_tensor_offset(g, i) + ggml_nbytes(t) > file_size - data_offset)
      Fail(path, std::string("the data of tensor ") + ggml_get_name(t) + " lies past the end of the file");
  }
  size_t max_tensor = 0;
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i)
    max_tensor = std::max(max_tensor, ggml_nbytes(ggml_get_tensor(w.ctx.get(), gguf_get_tensor_name(g, i))));
  // The mapping is read-only; ggml only ever reads weights.
  w.buffer.reset(ggml_backend_dev_buffer_from_host_ptr(dev, base, file_size - data_offset, max_tensor));
  if (!w.buffer) return false;
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
    ggml_tensor* t = ggml_get_tensor(w.ctx.get(), gguf_get_tensor_name(g, i));
    if (ggml_backend_tensor_alloc(w.buffer.get(), t, base + gguf_get_tensor_offset(g, i)) != GGML_STATUS_SUCCESS) return false;
  }
  ggml_backend_buffer_set_usage(w.buffer.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
  w.mapping = std::move(mapping);
  return true;
#endif
}
}  // namespace

std::unique_ptr<Blip2Weights> LoadBlip2Weights(const std::string& path, ggml_backend_t backend, bool use_mmap) {
  auto w = std::make_unique<Blip2Weights>();
  ggml_context* meta = nullptr;
  gguf_init_params gp{/*no_alloc*/ true, &meta};
  std::unique_ptr<gguf_context, GgufFree> g(gguf_init_from_file(path.c_str(), gp));
  if (!g) Fail(path, "not a readable GGUF file");
  w->ctx.reset(meta);
  Reader r(path, g.get(), meta);
  if (r.Str("general.architecture", "") != "blip2") Fail(path, "general.architecture is not blip2");
  Blip2Params& p = w->p;
  p.variant = r.Str("blip2.variant", "qformer");
  if (p.variant != "qformer" && p.variant != "patch_group") Fail(path, "unknown blip2.variant " + p.variant);
  // The prompt format is chosen in TS (the load plan); read here only so that a non-string one
  // still fails the load as it always has.
  r.Str("blip2.prompt_template", "none");
  p.image_size = r.U32("blip2.vision.image_size");
  p.patch_size = r.U32("blip2.vision.patch_size");
  p.v_width = r.U32("blip2.vision.embedding_length");
  p.v_depth = r.U32("blip2.vision.block_count");
  p.v_heads = r.U32("blip2.vision.attention.head_count");
  p.v_ff = r.U32("blip2.vision.feed_forward_length");
  p.v_eps = r.F32("blip2.vision.attention.layer_norm_epsilon", 1e-6f);
  p.ln_vision_eps = r.F32("blip2.vision.ln_vision_epsilon", 1e-5f);
  p.mean = r.F32x3("blip2.vision.image_mean", {0.48145466f, 0.4578275f, 0.40821073f});
  p.std = r.F32x3("blip2.vision.image_std", {0.26862954f, 0.26130258f, 0.27577711f});
  p.input_group = r.U32Or("blip2.projection.input_group", p.variant == "qformer" ? 1 : 4);
  p.output_length = r.U32("blip2.projection.output_length");
  for (auto [what, v] : {std::pair{"image_size", p.image_size}, {"patch_size", p.patch_size}, {"vision width", p.v_width},
                         {"vision depth", p.v_depth}, {"vision heads", p.v_heads}, {"vision MLP size", p.v_ff},
                         {"input_group", p.input_group}, {"output_length", p.output_length}})
    Positive(path, what, v);
  if (p.image_size % p.patch_size) Fail(path, "image_size is not a multiple of patch_size");
  if (p.v_width % p.v_heads) Fail(path, "vision width is not a multiple of its head count");
  for (float s : p.std) if (!(s > 0)) Fail(path, "image_std must be positive");

  const int64_t E = p.v_width, P = p.patch_size, T = int64_t(p.n_patches()) + 1;
  w->patch_w = r.Tensor("v.patch_embd.weight", {P, P, 3, E}, Reader::Allowed::F32OrF16);
  w->patch_b = r.Tensor("v.patch_embd.bias", {E});
  w->class_embd = r.Tensor("v.class_embd", {E});
  w->pos_embd = r.Tensor("v.position_embd", {E, T});
  for (uint32_t i = 0; i < p.v_depth; ++i) {
    const std::string b = "v.blk." + std::to_string(i);
    VisionBlock blk;
    blk.ln1 = r.LayerNorm(b + ".ln1", E);
    blk.qkv = r.Lin(b + ".attn_qkv", E, 3 * E);
    blk.out = r.Lin(b + ".attn_out", E, E);
    blk.ln2 = r.LayerNorm(b + ".ln2", E);
    blk.up = r.Lin(b + ".ffn_up", E, p.v_ff);
    blk.down = r.Lin(b + ".ffn_down", p.v_ff, E);
    w->vision.push_back(blk);
  }
  w->ln_vision = r.LayerNorm("v.ln_vision", E);

  int64_t proj_in;
  if (p.variant == "qformer") {
    p.q_hidden = r.U32("blip2.qformer.embedding_length");
    p.q_depth = r.U32("blip2.qformer.block_count");
    p.q_heads = r.U32("blip2.qformer.attention.head_count");
    p.q_ff = r.U32("blip2.qformer.feed_forward_length");
    p.q_eps = r.F32("blip2.qformer.layer_norm_epsilon", 1e-12f);
    p.q_cross_freq = r.U32Or("blip2.qformer.cross_attention_frequency", 2);
    p.q_queries = r.U32("blip2.qformer.query_count");
    for (auto [what, v] : {std::pair{"Q-Former hidden", p.q_hidden}, {"Q-Former depth", p.q_depth}, {"Q-Former heads", p.q_heads},
                           {"Q-Former intermediate", p.q_ff}, {"cross_attention_frequency", p.q_cross_freq}, {"query_count", p.q_queries}})
      Positive(path, what, v);
    if (p.q_hidden % p.q_heads) Fail(path, "Q-Former hidden size is not a multiple of its head count");
    if (p.input_group != 1) Fail(path, "the qformer variant needs projection.input_group 1");
    const int64_t H = p.q_hidden;
    w->query_tokens = r.Tensor("qf.query_tokens", {H, int64_t(p.q_queries)});
    w->q_ln_emb = r.LayerNorm("qf.ln_emb", H);
    for (uint32_t i = 0; i < p.q_depth; ++i) {
      const std::string b = "qf.blk." + std::to_string(i);
      QformerBlock blk;
      blk.self_q = r.Lin(b + ".self_q", H, H);
      blk.self_k = r.Lin(b + ".self_k", H, H);
      blk.self_v = r.Lin(b + ".self_v", H, H);
      blk.self_out = r.Lin(b + ".self_out", H, H);
      blk.self_ln = r.LayerNorm(b + ".self_ln", H);
      blk.has_cross = i % p.q_cross_freq == 0;
      if (blk.has_cross) {
        blk.cross_q = r.Lin(b + ".cross_q", H, H);
        blk.cross_k = r.Lin(b + ".cross_k", E, H);
        blk.cross_v = r.Lin(b + ".cross_v", E, H);
        blk.cross_out = r.Lin(b + ".cross_out", H, H);
        blk.cross_ln = r.LayerNorm(b + ".cross_ln", H);
      }
      blk.up = r.Lin(b + ".ffn_up", H, p.q_ff);
      blk.down = r.Lin(b + ".ffn_down", p.q_ff, H);
      blk.ffn_ln = r.LayerNorm(b + ".ffn_ln", H);
      w->qformer.push_back(blk);
    }
    proj_in = H;
  } else {
    if (p.n_patches() % p.input_group) Fail(path, "the patch count is not a multiple of projection.input_group");
    proj_in = E * p.input_group;
  }
  w->proj = r.Lin("proj", proj_in, p.output_length);

  if (use_mmap && MapOntoCpu(*w, path, g.get(), backend)) return w;

  // Weights onto the backend, read tensor by tensor.
  w->buffer.reset(ggml_backend_alloc_ctx_tensors(meta, backend));
  if (!w->buffer) throw NativeError("ERR_OUT_OF_MEMORY", "could not allocate the BLIP-2 projector's weights");
  ggml_backend_buffer_set_usage(w->buffer.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
  std::unique_ptr<FILE, FileClose> f(std::fopen(path.c_str(), "rb"));
  if (!f) Fail(path, "cannot open the file");
  const size_t data_offset = gguf_get_data_offset(g.get());
  std::vector<uint8_t> staging;
  for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) {
    ggml_tensor* t = ggml_get_tensor(meta, gguf_get_tensor_name(g.get(), i));
    const size_t n = ggml_nbytes(t);
    staging.resize(n);
    if (std::fseek(f.get(), long(data_offset + gguf_get_tensor_offset(g.get(), i)), SEEK_SET) != 0 ||
        std::fread(staging.data(), 1, n, f.get()) != n)
      Fail(path, std::string("cannot read the data of tensor ") + ggml_get_name(t) + " (truncated file?)");
    ggml_backend_tensor_set(t, staging.data(), 0, n);
  }
  return w;
}

}  // namespace minigpt
