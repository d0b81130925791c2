/**
 * @internal
 * `minigpt rpc-server`: this machine's devices served to other hosts over ggml's RPC protocol,
 * until SIGINT/SIGTERM.
 */
import { availableParallelism } from 'node:os';
import { parseRpcEndpoint, RPC_PROTOCOL, serveRpc } from '../rpc/index.js';
import { numberFlag, parseCommand, type OptionSpec } from './args.js';

export const rpcServerUsage = `  minigpt rpc-server [--host 127.0.0.1] [--port 50052] [--threads N] [--cache DIR] [--device NAME,...]
      serves this machine's devices (its GPUs, else its CPU) to loadModel({ rpcServers }) on other
      hosts, over ggml's RPC protocol (${RPC_PROTOCOL.major}.${RPC_PROTOCOL.minor}). The protocol has no authentication: bind a
      private address or use a tunnel (docs/rpc.md)
      --host <addr>            address to bind (default: 127.0.0.1; anything else warns)
      --port <n>               port (default: 50052)
      --threads <n>            CPU threads for the CPU device (default: this machine's CPUs)
      --cache <dir>            keep tensors sent here, so that a reload sends only their hashes
      --device <names>         devices to serve, comma-separated, by the names getDevices() gives
`;

const options: Record<string, OptionSpec> = {
  host: { type: 'string' },
  port: { type: 'string' },
  threads: { type: 'string' },
  cache: { type: 'string' },
  device: { type: 'string' },
};

function isLoopback(host: string): boolean {
  return host === 'localhost' || /^127\./.test(host);
}

export async function rpcServer(argv: string[]): Promise<number> {
  const { values, help } = parseCommand('rpc-server', argv, options, false);
  if (help) {
    process.stdout.write(`Usage:\n${rpcServerUsage}`);
    return 0;
  }
  const host = (values.host as string | undefined) ?? '127.0.0.1';
  const port = numberFlag('rpc-server', 'port', values.port, { integer: true, min: 1, max: 65535 }) ?? 50052;
  const threads = numberFlag('rpc-server', 'threads', values.threads, { integer: true, min: 1, max: 1024 }) ?? availableParallelism();
  const endpoint = parseRpcEndpoint(`${host}:${port}`, '--host and --port');
  if (!isLoopback(host)) {
    process.stderr.write(
      `minigpt rpc-server: warning: listening on ${endpoint.text}. ggml's RPC protocol has no authentication or encryption: ` +
        'anyone who reaches this port can run computations here and read what is sent. Keep it on a private network or behind a tunnel (docs/rpc.md).\n',
    );
  }
  const stop = () => {
    process.stderr.write('minigpt rpc-server: stopped\n');
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  // Resolves never; rejects if the server could not listen or a device failed.
  await serveRpc({ endpoint, threads, ...(values.cache !== undefined ? { cacheDir: values.cache as string } : {}), ...(values.device !== undefined ? { devices: (values.device as string).split(',').map((d) => d.trim()) } : {}) });
  return 1;
}
