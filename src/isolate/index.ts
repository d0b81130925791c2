/**
 * A model in a process of its own (`loadModel({ isolate: true })`, and by default every model with
 * `rpcServers`): what kills that process (ggml's RPC client aborting when a server goes away, a
 * GPU driver reset, the OOM killer) reaches the app as `ERR_BACKEND_LOST` on the running call,
 * and the app lives on and can load again.
 * @module
 */
import { MinigptError } from '../errors.js';
import { parseRpcEndpoint, probeRpcServer } from '../rpc/index.js';
import type { DeathExplainer } from './client.js';

export { loadInIsolation, type DeathExplainer } from './client.js';

function lastLine(text: string): string {
  return text.trim().split('\n').filter((l) => l.trim() !== '').at(-1)?.trim() ?? '';
}

/** The error for a dead model process: the RPC servers that no longer answer, else how it ended. */
export function explainDeath(rpcServers: readonly string[] | undefined): DeathExplainer {
  return async ({ code, signal, stderr }) => {
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const said = lastLine(stderr);
    const detail = said ? ` (its last message: ${said})` : '';
    if (rpcServers && rpcServers.length > 0) {
      const checks = await Promise.allSettled(rpcServers.map((s) => probeRpcServer(parseRpcEndpoint(s, 'rpcServers'), { timeoutMs: 2000 })));
      const gone = rpcServers.filter((_, i) => checks[i]!.status === 'rejected');
      if (gone.length > 0) {
        return new MinigptError(
          'ERR_BACKEND_LOST',
          `The RPC server${gone.length > 1 ? 's' : ''} ${gone.join(', ')} stopped answering, and the model's process ${how}${detail}. ` +
            'The model is gone: load it again once the server is back (or without it).',
        );
      }
    }
    return new MinigptError('ERR_BACKEND_LOST', `The model's process ${how}${detail}. The model is gone: load it again.`);
  };
}
