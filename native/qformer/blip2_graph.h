// The BLIP-2 forward pass as one ggml graph: EVA ViT -> ln_vision -> Q-Former (or patch
// grouping) -> linear projection. Built from Blip2Weights alone; no shape is hard-coded.
#pragma once
#include "blip2_weights.h"

namespace minigpt {

struct Blip2Graph {
  ggml_cgraph* graph = nullptr;
  ggml_tensor* input = nullptr;   // [image, image, 3] f32, normalized pixels, planar
  ggml_tensor* output = nullptr;  // [output_length, n_output_tokens] f32
};

// Builds the graph in `ctx` (a no_alloc context sized by Blip2GraphMemory()).
Blip2Graph BuildBlip2Graph(ggml_context* ctx, const Blip2Weights& w);
size_t Blip2GraphMemory();
constexpr size_t kBlip2GraphNodes = 16384;

}  // namespace minigpt
