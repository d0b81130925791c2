/**
 * @internal
 * The process a model lives in when it is isolated (`loadModel({ isolate: true })`, and every
 * model with `rpcServers`): it loads the model with the native binding and answers the client's
 * requests (protocol.ts) with the same calls the library makes in-process. If anything here dies
 * (ggml's RPC client aborts when a server goes away; a GPU driver reset; the OOM killer), only
 * this process goes, and the client turns its death into ERR_BACKEND_LOST.
 */
import { MinigptError } from '../errors.js';
import { binding, setBindingConfig, type NativeEmbedding, type NativeGeneration, type NativeModel, type NativePromptPart, type NativeSession } from '../native/binding.js';
import { GENERATION_WINDOW, type Reply, type Request, type Signal, type WireError, type WirePromptPart } from './protocol.js';

let model: NativeModel | undefined;
const sessions = new Map<number, NativeSession>();
const embeddings = new Map<number, NativeEmbedding>();
interface HostGeneration {
  native: NativeGeneration;
  session: NativeSession;
  /** Pieces it may still send before the client reads more. */
  credit: number;
  wake?: () => void;
}
const generations = new Map<number, HostGeneration>();
const flags = new Map<number, { abort(): void }>();

function send(message: Reply): void {
  process.send?.(message);
}

function wireError(err: unknown): WireError {
  if (err instanceof MinigptError) return { code: err.code, message: err.message };
  return { code: 'ERR_NATIVE', message: (err as Error)?.message ?? String(err) };
}

function loaded(): NativeModel {
  if (!model) throw new MinigptError('ERR_DISPOSED', 'The model has been disposed');
  return model;
}

function flagFor(id: number) {
  const flag = new (binding().AbortFlag)();
  flags.set(id, flag);
  return flag;
}

function promptParts(parts: WirePromptPart[]): NativePromptPart[] {
  return parts.map((p) => {
    if (!('embedding' in p)) return p;
    const e = embeddings.get(p.embedding);
    if (!e) throw new MinigptError('ERR_DISPOSED', 'An image embedding of this prompt has been disposed');
    return e;
  });
}

async function handle(r: Request): Promise<unknown> {
  switch (r.t) {
    case 'load': {
      setBindingConfig(r.binding);
      const addon = binding();
      model = await addon.loadModel(r.options, (progress) => send({ t: 'progress', id: r.id, progress }), flagFor(r.id));
      return { info: model.info() };
    }
    case 'rpcDevices':
      setBindingConfig(r.binding);
      return binding().rpcDevices(r.endpoints);
    case 'tokenize':
      return loaded().tokenize(r.text, r.addSpecial, r.parseSpecial, flagFor(r.id));
    case 'detokenize':
      return loaded().detokenize(r.tokens, r.special);
    case 'encode': {
      const e = await loaded().encodeImage(r.rgb, r.width, r.height, flagFor(r.id));
      embeddings.set(r.embedding, e);
      // The rows go with the answer: toFloat32Array() is synchronous on the other side.
      return { nTokens: e.nTokens, nEmbd: e.nEmbd, rows: e.toFloat32Array() };
    }
    case 'createSession':
      sessions.set(r.session, loaded().createSession(r.options));
      return undefined;
    case 'generate': {
      const session = sessions.get(r.session);
      if (!session) throw new MinigptError('ERR_DISPOSED', 'This session has been disposed');
      const g: HostGeneration = { native: session.generate(promptParts(r.parts), r.options), session, credit: GENERATION_WINDOW };
      generations.set(r.generation, g);
      void pump(r.generation, g);
      return undefined;
    }
    case 'reset':
      sessions.get(r.session)?.reset();
      return undefined;
    case 'disposeSession':
      sessions.get(r.session)?.dispose();
      sessions.delete(r.session);
      return undefined;
    case 'disposeEmbedding':
      embeddings.get(r.embedding)?.dispose();
      embeddings.delete(r.embedding);
      return undefined;
    case 'trim':
      return loaded().trimIdleContexts();
    case 'dispose': {
      const m = model;
      model = undefined;
      await m?.dispose();
      return undefined;
    }
  }
}

// Pushes a generation's pieces as they come, within the client's credit: one message per batch
// the native loop delivers, none from the client per token.
async function pump(id: number, g: HostGeneration): Promise<void> {
  for (;;) {
    while (g.credit <= 0) await new Promise<void>((resolve) => (g.wake = resolve));
    const out = await g.native.next();
    const stats = g.session.stats();
    if (Array.isArray(out)) {
      g.credit -= out.length / 2;
      send({ t: 'generation', generation: id, output: { pieces: out, stats } });
      continue;
    }
    generations.delete(id);
    send({ t: 'generation', generation: id, output: { end: { stopReason: out.stopReason, ...(out.error ? { error: wireError(out.error) } : {}) }, stats } });
    return;
  }
}

process.on('message', (message: Request | Signal) => {
  if (message.t === 'abortRequest') {
    flags.get(message.id)?.abort();
    return;
  }
  if (message.t === 'abortGeneration') {
    const g = generations.get(message.generation);
    if (g) {
      g.native.abort();
      // What is left comes at once: the rest of the queue and the end.
      g.credit = Number.POSITIVE_INFINITY;
      g.wake?.();
    }
    return;
  }
  if (message.t === 'credit') {
    const g = generations.get(message.generation);
    if (g) {
      g.credit += message.pieces;
      g.wake?.();
      g.wake = undefined;
    }
    return;
  }
  const r = message;
  handle(r).then(
    (value) => send({ t: 'reply', id: r.id, value }),
    (err: unknown) => send({ t: 'reply', id: r.id, error: wireError(err) }),
  ).finally(() => flags.delete(r.id));
});
// The client went away (it exited, or disposed the model): nothing here has a reader left.
process.on('disconnect', () => process.exit(0));
