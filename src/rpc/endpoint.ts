/**
 * @internal
 * `host:port` as ggml's RPC backend reads it: everything before the first colon is the host
 * (so IPv6 literals cannot be written), a port from 1 to 65535 after it.
 */
import { InvalidArgumentError } from '../errors.js';

export interface RpcEndpoint {
  host: string;
  port: number;
  /** `host:port`, as ggml is given it. */
  text: string;
}

/** Parses one endpoint; `what` names it in the error. */
export function parseRpcEndpoint(value: unknown, what: string): RpcEndpoint {
  if (typeof value !== 'string') throw new InvalidArgumentError(`${what} must be a "host:port" string, not ${typeof value}`);
  const colon = value.indexOf(':');
  const host = colon < 0 ? '' : value.slice(0, colon);
  const portText = colon < 0 ? '' : value.slice(colon + 1);
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (host === '' || !(port >= 1 && port <= 65535) || /[\s/[\]]/.test(host)) {
    throw new InvalidArgumentError(
      `${what} must be "host:port" (e.g. "192.168.1.20:50052"), not ${JSON.stringify(value)}; IPv6 addresses cannot be used (ggml's RPC client reads up to the first colon), give a host name instead`,
    );
  }
  return { host, port, text: `${host}:${port}` };
}
