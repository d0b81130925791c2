#include "addon.h"

#include <cmath>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "abort_flag.h"
#include "backends.h"
#include "embedding.h"
#include "generation.h"
#include "log.h"
#include "model.h"
#include "quantize.h"
#include "rpc_binding.h"
#include "session_binding.h"
#include "worker.h"

#ifndef MINIGPT_LLAMA_COMMIT
#define MINIGPT_LLAMA_COMMIT "unknown"
#endif

namespace minigpt {

namespace {
void InitBackendOnce() {
  // llama_backend_init is process-wide; every environment (worker, Electron context) shares it
  // and none frees it, so one environment exiting cannot pull the backend from under another.
  static std::once_flag once;
  std::call_once(once, [] {
    InstallLogSink();
    LoadBundledBackends();
    llama_backend_init();
  });
}
}  // namespace

Addon::Addon(Napi::Env env, Napi::Object exports) {
  InitBackendOnce();
  InstallQuantizeLogHook();
  model_ctor = Napi::Persistent(NativeModel::Define(env));
  session_ctor = Napi::Persistent(NativeSession::Define(env));
  embedding_ctor = Napi::Persistent(NativeEmbedding::Define(env));
  generation_ctor = Napi::Persistent(Generation::Define(env));
  Napi::Function abort_flag = AbortFlag::Define(env);
  abort_ctor = Napi::Persistent(abort_flag);
  DefineAddon(exports, {InstanceMethod<&Addon::SetErrorFactory>("setErrorFactory"),
                        InstanceMethod<&Addon::LoadModel>("loadModel"),
                        InstanceMethod<&Addon::SystemInfo>("systemInfo"),
                        InstanceMethod<&Addon::LoadBackend>("loadBackend"),
                        InstanceMethod<&Addon::NativeHeap>("nativeHeap")});
  exports.Set("AbortFlag", abort_flag);
  exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
  exports.Set("rpcDevices", Napi::Function::New(env, RpcDevicesBinding, "rpcDevices"));
  exports.Set("rpcServe", Napi::Function::New(env, RpcServeBinding, "rpcServe"));
  exports.Set("llamaCommit", MINIGPT_LLAMA_COMMIT);
  exports.Set("napiVersion", NAPI_VERSION);
}

Napi::Value Addon::MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  if (!error_factory_.IsEmpty()) {
    Napi::Value err = error_factory_.Call({Napi::String::New(env, code), Napi::String::New(env, message)});
    if (!env.IsExceptionPending() && err.IsObject()) return err;
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", code);
  return e.Value();
}

void Addon::Throw(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Value err = MakeError(env, code, message);
  napi_throw(env, err);
}

Napi::Value Addon::SetErrorFactory(const Napi::CallbackInfo& info) {
  if (info[0].IsFunction()) error_factory_ = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

// loadModel({ path, projectorPath?, threads, gpuLayers, useMmap }, onProgress?: (p) => void, abort?: AbortFlag)
Napi::Value Addon::LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject() || !info[0].As<Napi::Object>().Get("path").IsString()) {
    Throw(env, "ERR_INVALID_ARGUMENT", "Expected an options object with a string `path`");
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  LoadOptions opts;
  opts.path = o.Get("path").As<Napi::String>().Utf8Value();
  if (o.Get("projectorPath").IsString()) opts.projector_path = o.Get("projectorPath").As<Napi::String>().Utf8Value();
  if (o.Get("projectorKind").IsString()) opts.projector_kind = o.Get("projectorKind").As<Napi::String>().Utf8Value();
  if (o.Get("threads").IsNumber()) opts.threads = std::max(1, o.Get("threads").As<Napi::Number>().Int32Value());
  if (o.Get("gpuLayers").IsNumber()) opts.gpu_layers = o.Get("gpuLayers").As<Napi::Number>().Int32Value();
  if (o.Get("useMmap").IsBoolean()) opts.use_mmap = o.Get("useMmap").As<Napi::Boolean>().Value();
  if (o.Get("rpcServers").IsArray()) {
    Napi::Array a = o.Get("rpcServers").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i)
      if (a.Get(i).IsString()) opts.rpc_servers.push_back(a.Get(i).As<Napi::String>().Utf8Value());
  }
  if (o.Get("tensorSplit").IsArray()) {
    Napi::Array a = o.Get("tensorSplit").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i)
      if (a.Get(i).IsNumber()) opts.tensor_split.push_back(a.Get(i).As<Napi::Number>().FloatValue());
  }

  std::shared_ptr<Napi::ThreadSafeFunction> progress_fn;
  if (info[1].IsFunction()) {
    progress_fn = std::make_shared<Napi::ThreadSafeFunction>(
        Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "minigpt-load-progress", 0, 1));
  }
  AbortState abort = AbortFlag::From(env, info[2]);

  return TaskWorker<std::shared_ptr<ModelState>>::Run(
      env,
      [opts, abort, progress_fn] {
        struct Release {
          std::shared_ptr<Napi::ThreadSafeFunction> fn;
          ~Release() { if (fn) fn->Release(); }
        } release{progress_fn};
        float last = -1.0f;
        std::function<void(float)> report;
        if (progress_fn) {
          report = [&last, progress_fn](float p) {
            // Only increases of at least 1% (and the final 1.0) cross threads.
            if (!(p > 0.0f) || p > 1.0f || (p < 1.0f && p - last < 0.01f) || p <= last) return;
            last = p;
            progress_fn->NonBlockingCall([p](Napi::Env env, Napi::Function cb) {
              cb.Call({Napi::Number::New(env, p)});
              if (env.IsExceptionPending()) env.GetAndClearPendingException();  // TS wraps the callback
            });
          };
        }
        return NativeModel::Load(opts, abort.get(), report);
      },
      [](Napi::Env env, std::shared_ptr<ModelState>& state) -> Napi::Value { return NativeModel::Wrap(env, state); });
}

DeviceSnapshot SnapshotDevice(ggml_backend_dev_t dev) {
  DeviceSnapshot d;
  d.name = ggml_backend_dev_name(dev);
  d.description = ggml_backend_dev_description(dev);
  switch (ggml_backend_dev_type(dev)) {
    case GGML_BACKEND_DEVICE_TYPE_GPU: d.type = "gpu"; break;
    case GGML_BACKEND_DEVICE_TYPE_IGPU: d.type = "igpu"; break;
    case GGML_BACKEND_DEVICE_TYPE_ACCEL: d.type = "accel"; break;
    default: d.type = "cpu"; break;
  }
  ggml_backend_dev_memory(dev, &d.free, &d.total);
  return d;
}

Napi::Object DeviceObject(Napi::Env env, const DeviceSnapshot& device) {
  Napi::Object d = Napi::Object::New(env);
  d.Set("name", device.name);
  d.Set("description", device.description);
  d.Set("type", device.type);
  d.Set("memoryFree", double(device.free));
  d.Set("memoryTotal", double(device.total));
  return d;
}

Napi::Value Addon::SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("llamaSystemInfo", llama_print_system_info());
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); ++i) devices.Set(uint32_t(i), DeviceObject(env, SnapshotDevice(ggml_backend_dev_get(i))));
  o.Set("devices", devices);
  CpuBackendInfo cpu = DescribeCpuBackend();
  Napi::Object cpu_info = Napi::Object::New(env);
  cpu_info.Set("variant", cpu.variant);
  cpu_info.Set("library", cpu.library);
  Napi::Object features = Napi::Object::New(env);
  for (const auto& [name, value] : cpu.features) features.Set(name, value);
  cpu_info.Set("features", features);
  o.Set("cpuBackend", cpu_info);
  o.Set("addonPath", LibraryPathOf(reinterpret_cast<const void*>(&LoadBundledBackends)));
  return o;
}

// nativeHeap(): the bytes malloc has handed out and not had back, for leak checks. RSS cannot
// tell: glibc keeps freed memory in its arenas. null where the C library does not say.
Napi::Value Addon::NativeHeap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 m = mallinfo2();
  Napi::Object o = Napi::Object::New(env);
  o.Set("inUse", double(m.uordblks));  // arena chunks in use
  o.Set("mapped", double(m.hblkhd));   // blocks large enough to get an mmap of their own
  return o;
#else
  return env.Null();
#endif
}

// loadBackend(path): registers one more ggml backend library (an optional GPU package's).
Napi::Value Addon::LoadBackend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    Throw(env, "ERR_INVALID_ARGUMENT", "loadBackend expects the path of a ggml backend library");
    return env.Undefined();
  }
  std::string error;
  if (!LoadBackendLibrary(info[0].As<Napi::String>().Utf8Value(), error)) {
    Throw(env, "ERR_BACKEND_LOAD", error);
    return env.Undefined();
  }
  return env.Undefined();
}

}  // namespace minigpt

using MinigptAddon = minigpt::Addon;
NODE_API_ADDON(MinigptAddon)
