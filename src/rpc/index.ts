/**
 * Several hosts, one model: ggml's RPC backend. `minigpt rpc-server` on each host serves its
 * devices; `loadModel({ rpcServers })` puts layers on them. Every endpoint is checked here
 * (connect and HELLO) before ggml's client sees it, since that client ends the process on a
 * server that is down or speaks another version.
 * @module
 */
import { bindingConfigForChild, type NativeDevice } from '../native/binding.js';
import { rpcDevicesInIsolation } from '../isolate/client.js';
import { InvalidArgumentError, MinigptError } from '../errors.js';
import { parseRpcEndpoint, type RpcEndpoint } from './endpoint.js';
import { probeRpcServer } from './probe.js';

export { parseRpcEndpoint, type RpcEndpoint } from './endpoint.js';
export { probeRpcServer, RPC_PROTOCOL, type RpcServerVersion } from './probe.js';
export { serveRpc, type RpcServeOptions } from './serve.js';

/** As many servers as ggml's RPC backend takes (GGML_RPC_MAX_SERVERS). */
export const MAX_RPC_SERVERS = 16;

/**
 * Parses a list of `host:port` strings and checks every server (in parallel).
 * @throws InvalidArgumentError for a malformed list; MinigptError `ERR_BACKEND_LOAD` naming the
 *   first server that failed its check; AbortedError.
 */
export async function checkRpcServers(value: unknown, what: string, signal?: AbortSignal): Promise<RpcEndpoint[]> {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_RPC_SERVERS) {
    throw new InvalidArgumentError(`${what} must be an array of 1 to ${MAX_RPC_SERVERS} "host:port" strings`);
  }
  const endpoints = value.map((v, i) => parseRpcEndpoint(v, `${what}[${i}]`));
  const texts = endpoints.map((e) => e.text);
  const twice = texts.find((t, i) => texts.indexOf(t) !== i);
  if (twice !== undefined) throw new InvalidArgumentError(`${what} names ${twice} twice`);
  const results = await Promise.allSettled(endpoints.map((e) => probeRpcServer(e, { signal })));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return endpoints;
}

/**
 * The devices that RPC servers offer, with their memory, as {@link getDevices} lists local ones.
 * Each server is checked first, and asked from a short-lived process of its own (ggml's client
 * ends the process it runs in when a server goes away mid-call).
 * @example
 * await getRpcDevices(['192.168.1.20:50052']) // [{ name: 'RPC0', description: '192.168.1.20:50052', type: 'gpu', ... }]
 * @throws MinigptError `ERR_BACKEND_LOAD` naming a server that is down, refuses or speaks another version
 */
export async function getRpcDevices(servers: string[], options: { signal?: AbortSignal } = {}): Promise<NativeDevice[]> {
  const endpoints = await checkRpcServers(servers, 'servers', options.signal);
  const texts = endpoints.map((e) => e.text);
  return rpcDevicesInIsolation(texts, bindingConfigForChild(), async ({ code, signal }) =>
    new MinigptError('ERR_BACKEND_LOST', `Asking the RPC servers ${texts.join(', ')} for their devices failed: the asking process ${signal ? `was killed by ${signal}` : `exited with code ${code}`} (a server went away during the call?)`),
  );
}
