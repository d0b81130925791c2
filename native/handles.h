// RAII owners for the llama.cpp / libmtmd handles the addon holds.
#pragma once
#include <memory>

#include "llama.h"
#include "mtmd.h"

namespace minigpt {

struct LlamaModelFree { void operator()(llama_model* m) const { llama_model_free(m); } };
struct LlamaContextFree { void operator()(llama_context* c) const { llama_free(c); } };
struct LlamaSamplerFree { void operator()(llama_sampler* s) const { llama_sampler_free(s); } };
struct LlamaBatchFree { void operator()(llama_batch* b) const { llama_batch_free(*b); delete b; } };

using ModelPtr = std::unique_ptr<llama_model, LlamaModelFree>;
using ContextPtr = std::unique_ptr<llama_context, LlamaContextFree>;
using SamplerPtr = std::unique_ptr<llama_sampler, LlamaSamplerFree>;

// The CPU backend may be a library loaded at run time, so its free function comes with the pool.
struct ThreadpoolFree {
  void (*free_fn)(ggml_threadpool*) = nullptr;
  void operator()(ggml_threadpool* t) const {
    if (free_fn) free_fn(t);
  }
};
using ThreadpoolPtr = std::unique_ptr<ggml_threadpool, ThreadpoolFree>;

}  // namespace minigpt
