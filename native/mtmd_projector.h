// Adapter over libmtmd for every projector it loads from an mmproj GGUF. All mtmd calls of
// the addon live in mtmd_projector.cpp: libmtmd's API is marked as subject to breaking change.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "ggml.h"
#include "projector.h"

struct llama_model;
struct mtmd_context;

namespace minigpt {

struct MtmdOptions {
  int threads = 4;
  bool use_gpu = false;
  const std::atomic<bool>* abort = nullptr;
};

// Loads `path` for `text_model`, which the projector keeps alive. Throws NativeError
// ERR_PROJECTOR_LOAD with libmtmd's logged reason.
std::shared_ptr<Projector> LoadMtmdProjector(const std::string& path, std::shared_ptr<llama_model> text_model,
                                             const MtmdOptions& options);

// Routes libmtmd's and its helper's logs to `sink` (log.cpp's), which keeps the last error for
// the messages of our typed errors.
void SetMtmdLogSink(ggml_log_callback sink, void* user_data);

}  // namespace minigpt
