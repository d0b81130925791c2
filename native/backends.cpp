#include "backends.h"

#include <iterator>
#include <mutex>
#include <set>
#include <string>

#include "ggml-backend.h"
#include "ggml-cpu.h"

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace minigpt {

namespace {

std::mutex registry_mu;  // ggml's registry is a plain vector: one writer at a time
std::set<std::string> loaded_libraries;

// Path helpers for the prebuild, whose CPU variants are libraries beside the addon.
#ifdef MINIGPT_BACKEND_DL
std::string DirectoryOf(const std::string& file) {
  const size_t slash = file.find_last_of("/\\");
  return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

std::string FileNameOf(const std::string& file) {
  const size_t slash = file.find_last_of("/\\");
  return slash == std::string::npos ? file : file.substr(slash + 1);
}
#endif

}  // namespace

std::string LibraryPathOf(const void* address) {
#ifdef _WIN32
  HMODULE module = nullptr;
  if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                          static_cast<LPCWSTR>(address), &module)) {
    return "";
  }
  wchar_t wide[32768];
  const DWORD n = GetModuleFileNameW(module, wide, static_cast<DWORD>(std::size(wide)));
  if (n == 0 || n >= std::size(wide)) return "";
  const int bytes = WideCharToMultiByte(CP_UTF8, 0, wide, static_cast<int>(n), nullptr, 0, nullptr, nullptr);
  std::string utf8(static_cast<size_t>(bytes), '\0');
  WideCharToMultiByte(CP_UTF8, 0, wide, static_cast<int>(n), utf8.data(), bytes, nullptr, nullptr);
  return utf8;
#else
  Dl_info info{};
  if (dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
#endif
}

void LoadBundledBackends() {
#ifdef MINIGPT_BACKEND_DL
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string dir = DirectoryOf(LibraryPathOf(reinterpret_cast<const void*>(&LoadBundledBackends)));
    std::lock_guard<std::mutex> lock(registry_mu);
    // Loads, per backend kind, the library whose score is highest on this machine
    // (for the CPU: the most capable variant whose instructions this CPU has).
    ggml_backend_load_all_from_path(dir.c_str());
  });
#endif
}

bool LoadBackendLibrary(const std::string& path, std::string& error) {
#ifdef MINIGPT_BACKEND_DL
  std::lock_guard<std::mutex> lock(registry_mu);
  if (loaded_libraries.count(path)) return true;
  if (ggml_backend_load(path.c_str()) == nullptr) {
    error = "ggml could not load the backend library " + path +
            " (a missing dependency such as the CUDA runtime, or a backend built for another llama.cpp commit)";
    return false;
  }
  loaded_libraries.insert(path);
  return true;
#else
  error = "this build of minigpt-node links its backends in (a local build); loadable backends need a prebuild "
          "(npm run prebuild) or a build with the backend switched on (npx minigpt build --cuda / --vulkan / --metal)";
  return false;
#endif
}

CpuBackendInfo DescribeCpuBackend() {
  CpuBackendInfo info;
  ggml_backend_reg_t cpu = ggml_backend_reg_by_name("CPU");
  if (cpu == nullptr) return info;
  auto get_features = reinterpret_cast<ggml_backend_get_features_t>(
      ggml_backend_reg_get_proc_address(cpu, "ggml_backend_get_features"));
  if (get_features != nullptr) {
    for (ggml_backend_feature* f = get_features(cpu); f != nullptr && f->name != nullptr; ++f) {
      info.features.emplace_back(f->name, f->value ? f->value : "");
    }
  }
  // The registry keeps no file names; the features function lives in the variant's library.
  info.library = LibraryPathOf(reinterpret_cast<const void*>(get_features));
#ifdef MINIGPT_BACKEND_DL
  std::string name = FileNameOf(info.library);
  for (const char* prefix : {"libggml-cpu-", "ggml-cpu-"}) {
    if (name.rfind(prefix, 0) == 0) {
      name = name.substr(std::char_traits<char>::length(prefix));
      break;
    }
  }
  const size_t dot = name.find('.');
  info.variant = dot == std::string::npos ? name : name.substr(0, dot);
  if (info.variant == "libggml-cpu" || info.variant == "ggml-cpu") info.variant = "generic";  // no variants built
#else
  info.variant = "built-in";
#endif
  return info;
}

ThreadpoolPtr NewCpuThreadpool(int n_threads) {
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (!cpu) return {};
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
  auto* new_fn = reinterpret_cast<decltype(ggml_threadpool_new)*>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new"));
  auto* free_fn = reinterpret_cast<decltype(ggml_threadpool_free)*>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free"));
  if (!new_fn || !free_fn) return {};
  ggml_threadpool_params params = ggml_threadpool_params_default(n_threads);
  return ThreadpoolPtr(new_fn(&params), ThreadpoolFree{free_fn});
}

}  // namespace minigpt
