#include "rpc.h"

#include "errors.h"

namespace minigpt {
namespace {

ggml_backend_reg_t RpcRegistry() { return ggml_backend_reg_by_name("RPC"); }

template <typename Fn>
Fn RpcFunction(const char* name) {
  ggml_backend_reg_t reg = RpcRegistry();
  return reg ? reinterpret_cast<Fn>(ggml_backend_reg_get_proc_address(reg, name)) : nullptr;
}

}  // namespace

std::vector<ggml_backend_dev_t> RpcDevices(const std::vector<std::string>& endpoints) {
  using AddServer = ggml_backend_reg_t (*)(const char*);
  auto add_server = RpcFunction<AddServer>("ggml_backend_rpc_add_server");
  if (!add_server)
    throw NativeError("ERR_BACKEND_LOAD", "this build of minigpt-node has no RPC backend (libggml-rpc); rebuild with `npx minigpt build` or reinstall");
  std::vector<ggml_backend_dev_t> devices;
  for (const std::string& endpoint : endpoints) {
    ggml_backend_reg_t reg = add_server(endpoint.c_str());  // ggml keeps one per endpoint
    if (!reg || ggml_backend_reg_dev_count(reg) == 0)
      throw NativeError("ERR_BACKEND_LOAD", "the RPC server " + endpoint + " offers no device; start it with a device it can serve");
    for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); ++i) devices.push_back(ggml_backend_reg_dev_get(reg, i));
  }
  return devices;
}

bool IsRpcDevice(ggml_backend_dev_t dev) {
  ggml_backend_reg_t rpc = RpcRegistry();
  return rpc != nullptr && ggml_backend_dev_backend_reg(dev) == rpc;
}

void ServeRpc(const std::string& endpoint, const std::string& cache_dir, int threads, const std::vector<std::string>& names,
              std::string& error) {
  using StartServer = void (*)(const char*, const char*, size_t, size_t, ggml_backend_dev_t*);
  auto start_server = RpcFunction<StartServer>("ggml_backend_rpc_start_server");
  if (!start_server) {
    error = "this build of minigpt-node has no RPC backend (libggml-rpc); rebuild with `npx minigpt build` or reinstall";
    return;
  }
  std::vector<ggml_backend_dev_t> devices;
  for (const std::string& name : names) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
    if (!dev || IsRpcDevice(dev)) {
      error = "no local device named " + name + " (getDevices() lists them)";
      return;
    }
    devices.push_back(dev);
  }
  if (devices.empty()) {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
      ggml_backend_dev_t dev = ggml_backend_dev_get(i);
      const auto type = ggml_backend_dev_type(dev);
      if ((type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) && !IsRpcDevice(dev)) devices.push_back(dev);
    }
  }
  if (devices.empty()) {
    if (ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) devices.push_back(cpu);
  }
  if (devices.empty()) {
    error = "no device to serve";
    return;
  }
  start_server(endpoint.c_str(), cache_dir.empty() ? nullptr : cache_dir.c_str(), size_t(threads), devices.size(), devices.data());
  error = "the RPC server on " + endpoint + " stopped: it could not listen there (in use, or not an address of this machine?) or a device failed to start; its messages are above";
}

}  // namespace minigpt
