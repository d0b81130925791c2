// JS functions of the RPC backend: rpcDevices(endpoints) and rpcServe(options).
#pragma once
#include <napi.h>

namespace minigpt {

// rpcDevices(endpoints: string[]): Promise<DeviceInfo[]> — the servers' devices and memory.
Napi::Value RpcDevicesBinding(const Napi::CallbackInfo& info);
// rpcServe({ endpoint, cacheDir, threads, devices }): Promise<never> — rejects with
// ERR_BACKEND_LOAD if the server stops (it only stops on failure).
Napi::Value RpcServeBinding(const Napi::CallbackInfo& info);

}  // namespace minigpt
