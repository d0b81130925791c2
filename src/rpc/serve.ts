/**
 * @internal
 * This machine's devices offered to other hosts over ggml's RPC protocol. The server is ggml's
 * own (`ggml_backend_rpc_start_server`, the function llama.cpp's `rpc-server` tool calls), run
 * inside the addon so that it is built from the same source and needs no second binary; it
 * holds one libuv pool thread for as long as the process lives.
 */
import { binding } from '../native/binding.js';
import type { RpcEndpoint } from './endpoint.js';

/** What to serve. */
export interface RpcServeOptions {
  endpoint: RpcEndpoint;
  /** CPU threads for the CPU device. */
  threads: number;
  /** A folder where the server keeps tensors it was sent, so that a reload sends only their hashes. */
  cacheDir?: string;
  /** Local devices to serve, by name (`getDevices()`); default: the GPUs, else the CPU. */
  devices?: string[];
}

/**
 * Serves until the process ends. Rejects with `ERR_BACKEND_LOAD` only if the server stops: it
 * could not listen (address in use, or not this machine's) or a device failed to start.
 */
export function serveRpc(options: RpcServeOptions): Promise<never> {
  return binding().rpcServe({
    endpoint: options.endpoint.text,
    threads: options.threads,
    ...(options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {}),
    ...(options.devices !== undefined ? { devices: options.devices } : {}),
  });
}
