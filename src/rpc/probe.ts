/**
 * @internal
 * Checks an RPC server before ggml's client sees it: ggml ends the process (GGML_ABORT, which
 * always aborts) when a server is down, refuses, or answers the HELLO with another protocol
 * version, and we do not patch llama.cpp. So we connect and say HELLO ourselves first, the way
 * ggml-rpc.cpp does: command byte 14, a u64 size (24) and 24 bytes of connection capabilities
 * (zeros: no transport upgrade); the server answers a u64 size (28) and {major, minor, patch,
 * pad, capabilities[24]}. ggml accepts the same major and a minor not above its own.
 */
import { Socket } from 'node:net';
import { AbortedError, MinigptError, throwIfAborted } from '../errors.js';
import type { RpcEndpoint } from './endpoint.js';

/** The RPC protocol the bundled llama.cpp speaks (ggml-rpc.h). */
export const RPC_PROTOCOL = { major: 7, minor: 0 } as const;

const HELLO_COMMAND = 14;
const CAPS_SIZE = 24;
const HELLO_RESPONSE_SIZE = 4 + CAPS_SIZE;

/** The server's protocol version. */
export interface RpcServerVersion {
  major: number;
  minor: number;
  patch: number;
}

function helloRequest(): Buffer {
  const b = Buffer.alloc(1 + 8 + CAPS_SIZE);
  b.writeUInt8(HELLO_COMMAND, 0);
  b.writeBigUInt64LE(BigInt(CAPS_SIZE), 1);
  return b;
}

/**
 * Connects to `endpoint` and exchanges the RPC HELLO, within `timeoutMs`.
 * @throws MinigptError `ERR_BACKEND_LOAD` naming the host: unreachable, refused, closed, not an
 *   RPC server, or one of another protocol version; AbortedError when `signal` aborts.
 */
export function probeRpcServer(endpoint: RpcEndpoint, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<RpcServerVersion> {
  const { timeoutMs = 5000, signal } = options;
  throwIfAborted(signal);
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let received = Buffer.alloc(0);
    let settled = false;
    const finish = (err: Error | undefined, version?: RpcServerVersion) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve(version!);
    };
    const fail = (why: string, cause?: unknown) =>
      finish(new MinigptError('ERR_BACKEND_LOAD', `RPC server ${endpoint.text}: ${why}`, cause === undefined ? undefined : { cause }));
    const onAbort = () => finish(new AbortedError(`Checking the RPC server ${endpoint.text} was aborted`, { cause: signal?.reason }));
    const timer = setTimeout(() => fail(`no HELLO answer within ${timeoutMs} ms; is \`minigpt rpc-server\` (or llama.cpp's rpc-server) running there and reachable?`), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const what = err.code === 'ECONNREFUSED' ? 'connection refused; is `minigpt rpc-server` running on that port?'
        : err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN' ? 'the host name does not resolve'
        : `cannot connect (${err.code ?? err.message})`;
      fail(what, err);
    });
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 8) return;
      const size = received.readBigUInt64LE(0);
      if (size !== BigInt(HELLO_RESPONSE_SIZE)) {
        fail(`answered the HELLO with ${size} bytes where an RPC server of protocol ${RPC_PROTOCOL.major}.x sends ${HELLO_RESPONSE_SIZE}: it is not an RPC server, or one of another protocol version`);
        return;
      }
      if (received.length < 8 + HELLO_RESPONSE_SIZE) return;
      const version = { major: received.readUInt8(8), minor: received.readUInt8(9), patch: received.readUInt8(10) };
      if (version.major !== RPC_PROTOCOL.major || version.minor > RPC_PROTOCOL.minor) {
        fail(`speaks RPC protocol ${version.major}.${version.minor}.${version.patch}, this build speaks ${RPC_PROTOCOL.major}.${RPC_PROTOCOL.minor}; run the same minigpt-node (or llama.cpp) version on both sides`);
        return;
      }
      finish(undefined, version);
    });
    socket.once('end', () => fail('closed the connection during the HELLO: it is not an RPC server, or one of another protocol version'));
    socket.connect(endpoint.port, endpoint.host, () => socket.write(helloRequest()));
  });
}
