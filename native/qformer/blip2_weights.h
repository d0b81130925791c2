// The BLIP-2 projector's hyperparameters and weights, read from our GGUF layout
// (docs/blip2-gguf.md) onto a ggml backend. Every shape is read from the file and checked
// before any graph is built, so a bad file is an error, never a ggml assert.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"

namespace minigpt {

struct Blip2Params {
  std::string variant;          // "qformer" | "patch_group"
  uint32_t image_size = 0, patch_size = 0;
  uint32_t v_width = 0, v_depth = 0, v_heads = 0, v_ff = 0;
  float v_eps = 1e-6f, ln_vision_eps = 1e-5f;
  std::array<float, 3> mean{}, std{};
  uint32_t q_hidden = 0, q_depth = 0, q_heads = 0, q_ff = 0, q_cross_freq = 2, q_queries = 0;
  float q_eps = 1e-12f;
  uint32_t input_group = 1, output_length = 0;

  uint32_t n_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  uint32_t n_output_tokens() const { return variant == "qformer" ? q_queries : n_patches() / input_group; }
};

struct Linear {
  ggml_tensor* w = nullptr;
  ggml_tensor* b = nullptr;
};
struct Norm {
  ggml_tensor* w = nullptr;
  ggml_tensor* b = nullptr;
};

struct VisionBlock {
  Norm ln1, ln2;
  Linear qkv, out, up, down;
};

struct QformerBlock {
  Linear self_q, self_k, self_v, self_out;
  Norm self_ln;
  bool has_cross = false;
  Linear cross_q, cross_k, cross_v, cross_out;
  Norm cross_ln;
  Linear up, down;
  Norm ffn_ln;
};

struct GgmlContextFree { void operator()(ggml_context* c) const { ggml_free(c); } };
struct BackendBufferFree { void operator()(ggml_backend_buffer* b) const { ggml_backend_buffer_free(b); } };

struct Blip2Weights {
  Blip2Params p;
  ggml_tensor *patch_w = nullptr, *patch_b = nullptr, *class_embd = nullptr, *pos_embd = nullptr;
  std::vector<VisionBlock> vision;
  Norm ln_vision;
  ggml_tensor* query_tokens = nullptr;
  Norm q_ln_emb;
  std::vector<QformerBlock> qformer;
  Linear proj;

  std::unique_ptr<ggml_context, GgmlContextFree> ctx;  // tensor metadata
  std::unique_ptr<ggml_backend_buffer, BackendBufferFree> buffer;  // tensor data on the backend
  std::shared_ptr<void> mapping;  // the file's pages when the CPU backend reads weights in place
};

// Reads `path` onto `backend`; on a CPU backend (with `use_mmap`) the weights stay in the
// memory-mapped file instead of being copied. Throws NativeError ERR_PROJECTOR_LOAD naming
// what is wrong.
std::unique_ptr<Blip2Weights> LoadBlip2Weights(const std::string& path, ggml_backend_t backend, bool use_mmap);

}  // namespace minigpt
