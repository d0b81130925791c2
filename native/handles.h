// RAII owners for the llama.cpp / libmtmd handles the addon holds.
#pragma once
#include <memory>

#include "llama.h"
#include "mtmd.h"

namespace minigpt {

struct LlamaModelFree { void operator()(llama_model* m) const { llama_model_free(m); } };
struct LlamaContextFree { void operator()(llama_context* c) const { llama_free(c); } };
struct LlamaSamplerFree { void operator()(llama_sampler* s) const { llama_sampler_free(s); } };

using ContextPtr = std::unique_ptr<llama_context, LlamaContextFree>;
using SamplerPtr = std::unique_ptr<llama_sampler, LlamaSamplerFree>;

// A token batch of fixed capacity, one sequence id per token, refilled for each decode.
struct BatchOwner {
  llama_batch batch;
  explicit BatchOwner(int32_t n) : batch(llama_batch_init(n, 0, 1)) {}
  ~BatchOwner() { llama_batch_free(batch); }
  BatchOwner(const BatchOwner&) = delete;
  BatchOwner& operator=(const BatchOwner&) = delete;
  void Clear() { batch.n_tokens = 0; }
  void Add(llama_token t, llama_pos pos, llama_seq_id seq, bool logits) {
    int32_t i = batch.n_tokens++;
    batch.token[i] = t;
    batch.pos[i] = pos;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = seq;
    batch.logits[i] = logits;
  }
};

// The CPU backend may be a library loaded at run time, so its free function comes with the pool.
struct ThreadpoolFree {
  void (*free_fn)(ggml_threadpool*) = nullptr;
  void operator()(ggml_threadpool* t) const {
    if (free_fn) free_fn(t);
  }
};
using ThreadpoolPtr = std::unique_ptr<ggml_threadpool, ThreadpoolFree>;

}  // namespace minigpt
