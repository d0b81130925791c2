#include "rpc_binding.h"

#include <string>
#include <vector>

#include "addon.h"
#include "rpc.h"
#include "worker.h"

namespace minigpt {
namespace {

bool ReadStrings(Napi::Value v, std::vector<std::string>& out) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    if (!a.Get(i).IsString()) return false;
    out.push_back(a.Get(i).As<Napi::String>().Utf8Value());
  }
  return true;
}

}  // namespace

Napi::Value RpcDevicesBinding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> endpoints;
  if (!ReadStrings(info[0], endpoints) || endpoints.empty()) {
    Addon::From(env)->Throw(env, "ERR_INVALID_ARGUMENT", "rpcDevices needs a non-empty array of host:port strings");
    return env.Undefined();
  }
  // Asking a server for its memory is a round trip: off the JS thread.
  return TaskWorker<std::vector<DeviceSnapshot>>::Run(
      env,
      [endpoints] {
        std::vector<DeviceSnapshot> out;
        for (ggml_backend_dev_t dev : RpcDevices(endpoints)) out.push_back(SnapshotDevice(dev));
        return out;
      },
      [](Napi::Env env, std::vector<DeviceSnapshot>& devices) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, devices.size());
        for (uint32_t i = 0; i < devices.size(); ++i) a.Set(i, DeviceObject(env, devices[i]));
        return a;
      });
}

Napi::Value RpcServeBinding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Addon* addon = Addon::From(env);
  if (!info[0].IsObject() || !info[0].As<Napi::Object>().Get("endpoint").IsString()) {
    addon->Throw(env, "ERR_INVALID_ARGUMENT", "rpcServe needs { endpoint: 'host:port' }");
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  const std::string endpoint = o.Get("endpoint").As<Napi::String>().Utf8Value();
  const std::string cache_dir = o.Get("cacheDir").IsString() ? o.Get("cacheDir").As<Napi::String>().Utf8Value() : "";
  const int threads = o.Get("threads").IsNumber() ? std::max(1, o.Get("threads").As<Napi::Number>().Int32Value()) : 1;
  std::vector<std::string> devices;
  if (!o.Get("devices").IsUndefined() && !ReadStrings(o.Get("devices"), devices)) {
    addon->Throw(env, "ERR_INVALID_ARGUMENT", "rpcServe's devices must be an array of device names");
    return env.Undefined();
  }
  // Holds a libuv pool thread for the life of the process: `minigpt rpc-server` does nothing else.
  return TaskWorker<std::string>::Run(
      env,
      [endpoint, cache_dir, threads, devices] {
        std::string error;
        ServeRpc(endpoint, cache_dir, threads, devices, error);
        throw NativeError("ERR_BACKEND_LOAD", error);
        return error;
      },
      [](Napi::Env env, std::string&) -> Napi::Value { return env.Undefined(); });
}

}  // namespace minigpt
