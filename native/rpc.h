// ggml's RPC backend: layers of a model held by `rpc-server`s on other hosts, and the server
// side that offers this machine's devices to them. Every endpoint must have been checked (a TCP
// connect and the protocol's HELLO, src/rpc/probe.ts) before it gets here: ggml's RPC client
// ends the process when a server is down or speaks another version.
#pragma once

#include <string>
#include <vector>

#include "ggml-backend.h"

namespace minigpt {

// The devices of these servers. They are not registered with ggml's device list: llama.cpp's
// default device choice takes every registered GPU-type device, so a model loaded later without
// servers would use them too; the models that ask for them get them by name (LoadOptions).
// Throws NativeError(ERR_BACKEND_LOAD) when the RPC backend is missing or a server reports no
// device.
std::vector<ggml_backend_dev_t> RpcDevices(const std::vector<std::string>& endpoints);

// Whether `dev` is a remote device (so that only the models that asked for it use it).
bool IsRpcDevice(ggml_backend_dev_t dev);

// Serves `devices` (by name; empty: this machine's GPUs, else its CPU) on `endpoint` until the
// process ends. Returns only on failure, with `error` saying why.
void ServeRpc(const std::string& endpoint, const std::string& cache_dir, int threads, const std::vector<std::string>& devices,
              std::string& error);

}  // namespace minigpt
