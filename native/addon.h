// Per-environment state (main thread, each worker_thread, each Electron context): the JS
// error factory and the class constructors. Nothing here is process-wide.
#pragma once
#include <napi.h>

#include <string>

#include "ggml-backend.h"

namespace minigpt {

// A device as getDevices() reports it, read on any thread (a remote one's memory is a round trip).
struct DeviceSnapshot {
  std::string name, description, type;
  size_t free = 0, total = 0;
};
DeviceSnapshot SnapshotDevice(ggml_backend_dev_t dev);
Napi::Object DeviceObject(Napi::Env env, const DeviceSnapshot& device);

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);

  static Addon* From(Napi::Env env) { return env.GetInstanceData<Addon>(); }

  // A MinigptError subclass instance for `code`, made by the factory TS registered.
  Napi::Value MakeError(Napi::Env env, const std::string& code, const std::string& message);
  // Throws MakeError(...) as a pending JS exception; the caller returns right after.
  void Throw(Napi::Env env, const std::string& code, const std::string& message);

  Napi::FunctionReference model_ctor;
  Napi::FunctionReference session_ctor;
  Napi::FunctionReference embedding_ctor;
  Napi::FunctionReference generation_ctor;
  Napi::FunctionReference abort_ctor;

 private:
  Napi::Value SetErrorFactory(const Napi::CallbackInfo& info);
  Napi::Value LoadModel(const Napi::CallbackInfo& info);
  Napi::Value SystemInfo(const Napi::CallbackInfo& info);
  Napi::Value LoadBackend(const Napi::CallbackInfo& info);
  Napi::Value NativeHeap(const Napi::CallbackInfo& info);

  Napi::FunctionReference error_factory_;
};

}  // namespace minigpt
