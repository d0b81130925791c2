#include "mtmd_projector.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "encode_abort.h"
#include "errors.h"
#include "log.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace minigpt {
namespace {


// Shared by the projector and every block it made, so a block outlives a disposed model.
struct MtmdState {
  std::shared_ptr<llama_model> text_model;  // mtmd_context points into it
  EncodeAbort abort;  // handed to ctx as its cb_eval, so declared (and freed) around it
  mtmd::context_ptr ctx;  // libmtmd's own owners (mtmd.h), not ours
  std::mutex encode_mu;  // mtmd_encode_chunk and its output buffer are not thread-safe
  int32_t n_embd = 0;
};

// Attention without the causal mask while an image goes in, for the models whose images attend
// both ways (Gemma 3); restored on every exit, an aborted decode included.
class NonCausalScope {
 public:
  NonCausalScope(llama_context* ctx, bool enabled) : ctx_(enabled ? ctx : nullptr) {
    if (ctx_) llama_set_causal_attn(ctx_, false);
  }
  ~NonCausalScope() {
    if (ctx_) llama_set_causal_attn(ctx_, true);
  }
  NonCausalScope(const NonCausalScope&) = delete;
  NonCausalScope& operator=(const NonCausalScope&) = delete;

 private:
  llama_context* ctx_;
};

class MtmdBlock : public EmbeddingBlock {
 public:
  MtmdBlock(std::shared_ptr<MtmdState> state, mtmd_input_chunk* chunk)
      : state_(std::move(state)), chunk_(chunk) {}

  int32_t Decode(llama_context* ctx, llama_pos n_past, llama_seq_id seq, int32_t n_batch, bool logits_last,
                 llama_pos* new_n_past) const override {
    // The helper reads the chunk's layout (M-RoPE positions, causal or not) and our floats, but
    // never asks for logits: llama.cpp's tools always put text after an image.
    if (!logits_last)
      return mtmd_helper_decode_image_chunk(state_->ctx.get(), ctx, chunk_.get(), const_cast<float*>(embd.data()),
                                            n_past, seq, n_batch, new_n_past, nullptr, nullptr);
    return DecodeWithLogits(ctx, n_past, seq, n_batch, new_n_past);
  }

 private:
  // What mtmd_helper_decode_image_chunk does (same positions, same batches, same attention
  // mask), with the last row of the last batch marked for output as libmtmd's own generation
  // helpers (mtmd-helper-gen.cpp) mark the end of an embedding prompt. The KV cache it leaves
  // is the helper's, so a later prompt that goes on past this image reuses it unchanged.
  int32_t DecodeWithLogits(llama_context* ctx, llama_pos n_past, llama_seq_id seq, int32_t n_batch,
                           llama_pos* new_n_past) const {
    mtmd_context* mctx = state_->ctx.get();
    const mtmd_input_chunk* chunk = chunk_.get();
    if (n_batch <= 0 || n_tokens <= 0) return -1;
    const size_t n = size_t(n_tokens);
    // M-RoPE takes four position rows (t, y, x, z), each n long, in the helper's order.
    const bool mrope = mtmd_decode_use_mrope(mctx);
    const size_t n_rows = mrope ? 4 : 1;
    std::vector<llama_pos> pos(n * n_rows);
    if (mrope) {
      const mtmd_image_tokens* image = mtmd_input_chunk_get_tokens_image(chunk);
      if (!image || mtmd_image_tokens_get_n_tokens(image) != n) return -1;
      std::vector<mtmd_decoder_pos> rel(n);
      mtmd_helper_image_get_decoder_pos(image, n_past, rel.data());
      for (size_t i = 0; i < n; ++i) {
        pos[i] = llama_pos(rel[i].t);
        pos[i + n] = llama_pos(rel[i].y);
        pos[i + n * 2] = llama_pos(rel[i].x);
        pos[i + n * 3] = llama_pos(rel[i].z);
      }
    } else {
      for (size_t i = 0; i < n; ++i) pos[i] = n_past + llama_pos(i);
    }
    const NonCausalScope non_causal(ctx, mtmd_decode_use_non_causal(mctx, chunk));

    llama_seq_id seq_one = seq;
    std::vector<llama_pos> pos_view;
    std::vector<int32_t> n_seq_id;
    std::vector<llama_seq_id*> seq_ids;
    std::vector<int8_t> logits;
    for (size_t start = 0; start < n; start += size_t(n_batch)) {
      const size_t m = std::min(size_t(n_batch), n - start);
      pos_view.clear();
      for (size_t r = 0; r < n_rows; ++r) pos_view.insert(pos_view.end(), pos.begin() + long(r * n + start), pos.begin() + long(r * n + start + m));
      n_seq_id.assign(m, 1);
      seq_ids.assign(m, &seq_one);
      logits.assign(m, 0);
      if (start + m == n) logits[m - 1] = 1;
      llama_batch batch{int32_t(m), nullptr, const_cast<float*>(embd.data()) + start * size_t(n_embd), pos_view.data(),
                        n_seq_id.data(), seq_ids.data(), logits.data()};
      const int32_t rc = llama_decode(ctx, batch);
      if (rc != 0) return rc;
    }
    *new_n_past = n_past + mtmd_input_chunk_get_n_pos(chunk);
    return 0;
  }

  std::shared_ptr<MtmdState> state_;
  mtmd::input_chunk_ptr chunk_;
};

class MtmdProjector : public Projector {
 public:
  explicit MtmdProjector(std::shared_ptr<MtmdState> state) : state_(std::move(state)) {}

  std::shared_ptr<const EncodedImage> Encode(const uint8_t* rgb, uint32_t width, uint32_t height,
                                             const std::atomic<bool>* abort) override {
    LogErrorScope log;
    mtmd::bitmap_ptr bitmap(mtmd_bitmap_init(width, height, rgb));
    if (!bitmap) throw NativeError("ERR_IMAGE_PREPROCESS", "could not make a bitmap from the image" + log.Suffix());

    // Tokenizing the marker alone yields the image's chunks plus any text the model wraps
    // around images (e.g. <start_of_image>), which belongs to the image wherever it is used.
    mtmd::input_chunks_ptr chunks(mtmd_input_chunks_init());
    mtmd_input_text text{mtmd_default_marker(), std::strlen(mtmd_default_marker()), false, true};
    const mtmd_bitmap* bitmaps[] = {bitmap.get()};
    int32_t rc = mtmd_tokenize(state_->ctx.get(), chunks.get(), &text, bitmaps, 1);
    if (rc == 1) throw NativeError("ERR_INVALID_ARGUMENT", "image/marker count mismatch" + log.Suffix());
    if (rc != 0) throw NativeError("ERR_IMAGE_PREPROCESS", "the projector could not preprocess the image (mtmd_tokenize " + std::to_string(rc) + ")" + log.Suffix());

    auto out = std::make_shared<EncodedImage>();
    out->n_embd = state_->n_embd;
    const size_t n_chunks = mtmd_input_chunks_size(chunks.get());
    for (size_t i = 0; i < n_chunks; ++i) {
      const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), i);
      ImageSegment seg;
      if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
        size_t n = 0;
        const llama_token* toks = mtmd_input_chunk_get_tokens_text(chunk, &n);
        seg.tokens.assign(toks, toks + n);
        out->n_tokens += int32_t(n);
        out->n_pos += llama_pos(n);
      } else if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
        auto block = std::make_shared<MtmdBlock>(state_, mtmd_input_chunk_copy(chunk));
        block->n_tokens = int32_t(mtmd_input_chunk_get_n_tokens(chunk));
        block->n_pos = mtmd_input_chunk_get_n_pos(chunk);
        block->n_embd = state_->n_embd;
        {
          std::lock_guard<std::mutex> lock(state_->encode_mu);
          EncodeAbort::Scope armed(state_->abort, abort);
          if (state_->abort.Raised()) throw NativeError("ERR_ABORTED", "image encoding aborted");
          int32_t enc = mtmd_encode_chunk(state_->ctx.get(), chunk);
          // clip reports a stopped compute as a success and copies what the graph holds: throw
          // that away. The next encode recomputes the whole graph, so nothing carries over.
          if (state_->abort.Raised()) throw NativeError("ERR_ABORTED", "image encoding aborted");
          if (enc != 0) throw NativeError("ERR_ENCODE", "the projector failed to encode the image (rc " + std::to_string(enc) + ")" + log.Suffix());
          const float* embd = mtmd_get_output_embd(state_->ctx.get());  // valid until the next encode
          block->embd.assign(embd, embd + size_t(block->n_tokens) * size_t(block->n_embd));
        }
        out->n_tokens += block->n_tokens;
        out->n_pos += block->n_pos;
        seg.block = std::move(block);
      } else {
        throw NativeError("ERR_ENCODE", "the projector produced a non-image chunk for an image");
      }
      out->segments.push_back(std::move(seg));
    }
    return out;
  }


 private:
  std::shared_ptr<MtmdState> state_;
};

bool AbortingProgress(float, void* data) {
  auto* flag = static_cast<const std::atomic<bool>*>(data);
  return !(flag && flag->load());
}

}  // namespace

std::shared_ptr<Projector> LoadMtmdProjector(const std::string& path, std::shared_ptr<llama_model> text_model,
                                             const MtmdOptions& options) {
  LogErrorScope log;
  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = options.use_gpu;
  params.n_threads = options.threads;
  params.print_timings = false;
  params.warmup = false;  // the first encode pays for it; load stays as fast as the file read
  params.progress_callback = AbortingProgress;
  params.progress_callback_user_data = const_cast<std::atomic<bool>*>(options.abort);

  auto state = std::make_shared<MtmdState>();
  params.cb_eval = EncodeAbort::EvalCallback;
  params.cb_eval_user_data = &state->abort;
  state->text_model = text_model;
  state->ctx.reset(mtmd_init_from_file(path.c_str(), text_model.get(), params));
  if (options.abort && options.abort->load()) throw NativeError("ERR_ABORTED", "projector load aborted");
  if (!state->ctx) throw NativeError("ERR_PROJECTOR_LOAD", "libmtmd could not load the projector " + path + log.Suffix());
  if (!mtmd_support_vision(state->ctx.get()))
    throw NativeError("ERR_PROJECTOR_LOAD", "the projector " + path + " has no vision encoder (audio-only projectors are not supported)");
  state->n_embd = llama_model_n_embd_inp(text_model.get());
  return std::make_shared<MtmdProjector>(std::move(state));
}

void SetMtmdLogSink(ggml_log_callback sink, void* user_data) {
  mtmd_log_set(sink, user_data);
  mtmd_helper_log_set(sink, user_data);
}

}  // namespace minigpt
