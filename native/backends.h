// Which ggml backends this process uses. A local build links the CPU backend into the addon;
// a prebuild (MINIGPT_BACKEND_DL) carries every CPU variant, and maybe a GPU backend, as
// libraries beside the addon and lets ggml pick the best one for this machine at load time.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "handles.h"

namespace minigpt {

// Registers the backend libraries beside the addon (a no-op in a local build). Process-wide,
// runs once; call before anything enumerates devices.
void LoadBundledBackends();

// Registers one more backend library (e.g. the CUDA backend from an optional package).
// Loading the same file twice is a no-op. Returns false with `error` set when it cannot load.
bool LoadBackendLibrary(const std::string& path, std::string& error);

struct CpuBackendInfo {
  std::string variant;  // "haswell", "zen4", ... or "built-in" for a local build
  std::string library;  // the file the CPU backend's code lives in
  std::vector<std::pair<std::string, std::string>> features;  // e.g. {"AVX2", "1"}
};

CpuBackendInfo DescribeCpuBackend();

// A ggml CPU thread pool of `n_threads` (its workers wait for the next graph instead of being
// started for each one); null when the CPU backend does not offer one.
ThreadpoolPtr NewCpuThreadpool(int n_threads);

// Absolute path of the file (the .node, a .so/.dll/.dylib) that holds `address`; "" if unknown.
std::string LibraryPathOf(const void* address);

}  // namespace minigpt
