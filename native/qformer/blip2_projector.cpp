#include "blip2_projector.h"

#include <mutex>
#include <vector>

#include "blip2_graph.h"
#include "blip2_weights.h"
#include "encode_abort.h"
#include "errors.h"
#include "llama.h"

namespace minigpt {
namespace {

struct BackendFree { void operator()(ggml_backend* b) const { ggml_backend_free(b); } };
struct SchedFree { void operator()(ggml_backend_sched* s) const { ggml_backend_sched_free(s); } };

// Embeddings fed to the LLM as a plain causal run of positions.
class PlainBlock : public EmbeddingBlock {
 public:
  int32_t Decode(llama_context* ctx, llama_pos n_past, llama_seq_id seq, int32_t n_batch, bool logits_last,
                 llama_pos* new_n_past) const override {
    for (int32_t start = 0; start < n_tokens; start += n_batch) {
      const int32_t n = std::min(n_batch, n_tokens - start);
      llama_batch batch = llama_batch_init(n, n_embd, 1);
      std::copy(embd.begin() + size_t(start) * n_embd, embd.begin() + size_t(start + n) * n_embd, batch.embd);
      for (int32_t i = 0; i < n; ++i) {
        batch.pos[i] = n_past + start + i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = seq;
        batch.logits[i] = logits_last && start + i + 1 == n_tokens;
      }
      batch.n_tokens = n;
      int32_t rc = llama_decode(ctx, batch);
      llama_batch_free(batch);
      if (rc != 0) return rc;
    }
    *new_n_past = n_past + n_tokens;
    return 0;
  }
};

class Blip2Projector : public Projector {
 public:
  Blip2Projector(std::shared_ptr<llama_model> text_model, std::unique_ptr<ggml_backend, BackendFree> gpu,
                 std::unique_ptr<ggml_backend, BackendFree> cpu, std::unique_ptr<Blip2Weights> weights)
      : text_model_(std::move(text_model)), gpu_(std::move(gpu)), cpu_(std::move(cpu)), w_(std::move(weights)) {
    // The scheduler puts each op on the first backend that can run it, the CPU last.
    std::vector<ggml_backend_t> backends;
    if (gpu_) backends.push_back(gpu_.get());
    backends.push_back(cpu_.get());
    sched_.reset(ggml_backend_sched_new(backends.data(), nullptr, int(backends.size()), kBlip2GraphNodes, false, true));
    StopOnAbort();
    graph_mem_.resize(Blip2GraphMemory());
    // Reserve once: every image runs the same graph, so the compute buffer is reused.
    Build();
    if (!ggml_backend_sched_reserve(sched_.get(), graph_.graph))
      throw NativeError("ERR_OUT_OF_MEMORY", "could not allocate the BLIP-2 projector's compute buffer");
  }

  std::shared_ptr<const EncodedImage> Encode(const uint8_t* rgb, uint32_t width, uint32_t height,
                                             const std::atomic<bool>* abort) override {
    const Blip2Params& p = w_->p;
    if (width != p.image_size || height != p.image_size)
      throw NativeError("ERR_IMAGE_PREPROCESS", "the BLIP-2 projector takes " + std::to_string(p.image_size) + "x" +
                                                    std::to_string(p.image_size) + " pixels, got " + std::to_string(width) + "x" + std::to_string(height));
    const size_t plane = size_t(width) * height;
    std::vector<float> pixels(plane * 3);
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) pixels[c * plane + i] = (rgb[i * 3 + c] / 255.0f - p.mean[c]) / p.std[c];

    auto block = std::make_shared<PlainBlock>();
    block->n_embd = int32_t(p.output_length);
    block->n_tokens = int32_t(p.n_output_tokens());
    block->n_pos = block->n_tokens;
    {
      std::lock_guard<std::mutex> lock(mu_);
      EncodeAbort::Scope armed(abort_, abort);
      if (abort_.Raised()) throw NativeError("ERR_ABORTED", "image encoding aborted");
      ggml_backend_sched_reset(sched_.get());
      Build();
      if (!ggml_backend_sched_alloc_graph(sched_.get(), graph_.graph))
        throw NativeError("ERR_ENCODE", "could not allocate the BLIP-2 graph");
      ggml_backend_tensor_set(graph_.input, pixels.data(), 0, pixels.size() * sizeof(float));
      const ggml_status status = ggml_backend_sched_graph_compute(sched_.get(), graph_.graph);  // synchronised
      // A stopped compute leaves the output half-made: drop it. Each encode recomputes the
      // whole graph from its input, so the next one is unaffected.
      if (abort_.Raised()) throw NativeError("ERR_ABORTED", "image encoding aborted");
      if (status != GGML_STATUS_SUCCESS) throw NativeError("ERR_ENCODE", "the BLIP-2 graph failed to compute");
      block->embd.resize(size_t(block->n_tokens) * block->n_embd);
      ggml_backend_tensor_get(graph_.output, block->embd.data(), 0, block->embd.size() * sizeof(float));
    }
    auto image = std::make_shared<EncodedImage>();
    image->n_tokens = block->n_tokens;
    image->n_pos = block->n_pos;
    image->n_embd = block->n_embd;
    image->segments.push_back({{}, std::move(block)});
    return image;
  }


 private:
  // The CPU backend checks its abort callback after every node, at no cost. A GPU backend has
  // no such hook, so with one the scheduler also splits the graph after each layer and asks
  // between pieces (a synchronisation per layer, small next to a layer's work).
  void StopOnAbort() {
    ggml_backend_reg_t cpu_reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu_.get()));
    auto set_abort = reinterpret_cast<ggml_backend_set_abort_callback_t>(
        ggml_backend_reg_get_proc_address(cpu_reg, "ggml_backend_set_abort_callback"));
    if (set_abort) set_abort(cpu_.get(), EncodeAbort::CpuAbortCallback, &abort_);
    if (gpu_ || !set_abort) ggml_backend_sched_set_eval_callback(sched_.get(), EncodeAbort::EvalCallback, &abort_);
  }

  void Build() {
    ggml_init_params params{graph_mem_.size(), graph_mem_.data(), true};
    graph_ctx_.reset(ggml_init(params));
    graph_ = BuildBlip2Graph(graph_ctx_.get(), *w_);
  }

  EncodeAbort abort_;  // the backends and scheduler call into it, so it outlives them
  std::shared_ptr<llama_model> text_model_;
  std::unique_ptr<ggml_backend, BackendFree> gpu_;  // may be null
  std::unique_ptr<ggml_backend, BackendFree> cpu_;
  std::unique_ptr<Blip2Weights> w_;
  std::unique_ptr<ggml_backend_sched, SchedFree> sched_;
  std::vector<uint8_t> graph_mem_;
  std::unique_ptr<ggml_context, GgmlContextFree> graph_ctx_;
  Blip2Graph graph_;
  std::mutex mu_;  // one encode at a time: the graph and its buffers are shared
};

}  // namespace

std::shared_ptr<Projector> LoadBlip2Projector(const std::string& path, std::shared_ptr<llama_model> text_model,
                                              const Blip2Options& options) {
  // Backends through the device registry only, so this also works when ggml's backends are
  // loadable modules (GGML_BACKEND_DL prebuilds) rather than linked in.
  ggml_backend_dev_t cpu_dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  std::unique_ptr<ggml_backend, BackendFree> cpu(cpu_dev ? ggml_backend_dev_init(cpu_dev, nullptr) : nullptr);
  if (!cpu) throw NativeError("ERR_PROJECTOR_LOAD", "could not start ggml's CPU backend");
  if (auto set_threads = reinterpret_cast<ggml_backend_set_n_threads_t>(
          ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu_dev), "ggml_backend_set_n_threads")))
    set_threads(cpu.get(), options.threads);
  std::unique_ptr<ggml_backend, BackendFree> gpu;
  if (options.use_gpu) {
    if (ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU)) gpu.reset(ggml_backend_dev_init(dev, nullptr));
  }
  // Weights live where the graph runs: on the GPU when there is one, else mapped from the file.
  auto weights = LoadBlip2Weights(path, gpu ? gpu.get() : cpu.get(), options.use_mmap && !gpu);
  const int32_t text_embd = llama_model_n_embd_inp(text_model.get());
  if (int64_t(weights->p.output_length) != text_embd)
    throw NativeError("ERR_PROJECTOR_MISMATCH", "projector output size " + std::to_string(weights->p.output_length) +
                                                    " does not match the text model's embedding size " + std::to_string(text_embd));
  return std::make_shared<Blip2Projector>(std::move(text_model), std::move(gpu), std::move(cpu), std::move(weights));
}

}  // namespace minigpt
