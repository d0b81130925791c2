// The BLIP-2 family (MiniGPT-4, BLIP-2 OPT) as a Projector: our own ggml graph, run through
// ggml's backend scheduler, for the projectors libmtmd does not have.
#pragma once
#include <memory>
#include <string>

#include "projector.h"

struct llama_model;

namespace minigpt {

struct Blip2Options {
  int threads = 4;
  bool use_mmap = true;
  bool use_gpu = false;  // run on the first GPU device ggml has, when there is one
};

// Throws NativeError ERR_PROJECTOR_LOAD / ERR_PROJECTOR_MISMATCH.
std::shared_ptr<Projector> LoadBlip2Projector(const std::string& path, std::shared_ptr<llama_model> text_model,
                                              const Blip2Options& options);

}  // namespace minigpt
