/**
 * @internal
 * A model in a process of its own, behind the same native interface the library uses in-process
 * (NativeModel, NativeSession, NativeGeneration, NativeEmbedding), so that Model, Session and
 * ImageEmbedding run unchanged on top of it. The generation loop stays in C++ in that process;
 * each next() is one round trip, while the loop there keeps filling its queue. When the process
 * dies, everything pending and everything asked later fails with ERR_BACKEND_LOST.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { errorFromCode, MinigptError } from '../errors.js';
import type {
  BindingConfig,
  NativeAbortFlag,
  NativeDevice,
  NativeEmbedding,
  NativeEnd,
  NativeGenerateOptions,
  NativeGeneration,
  NativeModel,
  NativeModelInfo,
  NativePieces,
  NativePromptPart,
  NativeSession,
  NativeSessionStats,
} from '../native/binding.js';
import { GENERATION_WINDOW, type EncodeReply, type GenerationOutput, type LoadReply, type LoadRequest, type Reply, type Request, type Signal, type WireError, type WirePromptPart } from './protocol.js';

const hostScript = fileURLToPath(new URL('./host.js', import.meta.url));
// The native abort flags the library raises are polled: they are plain native objects.
const ABORT_POLL_MS = 25;

/** Says, once the host process has died, what to tell the caller. */
export type DeathExplainer = (exit: { code: number | null; signal: NodeJS.Signals | null; stderr: string }) => Promise<MinigptError>;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  onProgress?: (p: number) => void;
}

const emptyStats: NativeSessionStats = { promptTokens: 0, reusedTokens: 0, evaluatedTokens: 0, generatedTokens: 0, totalEvaluatedTokens: 0, totalGeneratedTokens: 0, contextUsed: 0 };

class HostConnection {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, Pending>();
  readonly #generations = new Map<number, RemoteGeneration>();
  #nextId = 1;
  #dead: MinigptError | undefined;
  #dying: Promise<MinigptError>;
  #stderr = '';

  constructor(explain: DeathExplainer) {
    this.#child = fork(hostScript, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    this.#child.stderr?.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      this.#stderr = (this.#stderr + chunk.toString()).slice(-4096);
    });
    this.#child.on('message', (m: Reply) => this.#onMessage(m));
    this.#dying = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        void explain({ code, signal, stderr: this.#stderr }).then((err) => {
          this.#dead = err;
          for (const p of this.#pending.values()) p.reject(err);
          this.#pending.clear();
          for (const g of this.#generations.values()) g.fail(err);
          this.#generations.clear();
          this.#updateRef();
          resolve(err);
        });
      });
    });
    this.#updateRef();
  }

  /** The error every call gets once the process has died, or undefined while it lives. */
  get dead(): MinigptError | undefined {
    return this.#dead;
  }

  newId(): number {
    return this.#nextId++;
  }

  request<T>(message: DistributiveOmit<Request, 'id'>, options: { flag?: NativeAbortFlag; onProgress?: (p: number) => void; id?: number } = {}): Promise<T> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = options.id ?? this.newId();
    return new Promise<T>((resolve, reject) => {
      let poll: NodeJS.Timeout | undefined;
      const done = () => {
        if (poll) clearInterval(poll);
        this.#pending.delete(id);
        this.#updateRef();
      };
      this.#pending.set(id, {
        resolve: (v) => {
          done();
          resolve(v as T);
        },
        reject: (e) => {
          done();
          reject(e);
        },
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      });
      const flag = options.flag;
      if (flag) {
        poll = setInterval(() => {
          if (!flag.aborted) return;
          clearInterval(poll);
          poll = undefined;
          this.signal({ t: 'abortRequest', id });
        }, ABORT_POLL_MS);
        poll.unref();
      }
      this.#updateRef();
      this.#child.send({ ...message, id } as Request);
    });
  }

  /** Routes a generation's pushed output to it until its end; it keeps the app alive meanwhile. */
  follow(id: number, generation: RemoteGeneration): void {
    this.#generations.set(id, generation);
    this.#updateRef();
  }

  unfollow(id: number): void {
    this.#generations.delete(id);
    this.#updateRef();
  }

  signal(message: Signal): void {
    if (!this.#dead && this.#child.connected) this.#child.send(message);
  }

  /** Ends the process (after a dispose, or a failed load) and waits for it. */
  async close(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.ref();  // the app waits for the exit, as for any other call
      if (this.#child.connected) this.#child.disconnect();
      await this.#dying;
    }
  }

  #onMessage(m: Reply): void {
    if (m.t === 'generation') {
      this.#generations.get(m.generation)?.push(m.output);
      return;
    }
    const p = this.#pending.get(m.id);
    if (!p) return;
    if (m.t === 'progress') p.onProgress?.(m.progress);
    else if (m.error) p.reject(errorFromCode(m.error.code, m.error.message));
    else p.resolve(m.value);
  }

  // Waiting requests keep the app's event loop alive, as a native call in progress does; an idle
  // model in another process must not.
  #updateRef(): void {
    const busy = this.#pending.size > 0 || this.#generations.size > 0;
    const channel = (this.#child as ChildProcess & { channel?: { ref(): void; unref(): void } }).channel;
    if (busy) {
      this.#child.ref();
      channel?.ref();
    } else {
      this.#child.unref();
      channel?.unref();
    }
  }
}

function fromWire(e: WireError): MinigptError {
  return errorFromCode(e.code, e.message);
}

class RemoteEmbedding implements NativeEmbedding {
  #disposed = false;
  constructor(
    private readonly host: HostConnection,
    readonly id: number,
    private readonly reply: EncodeReply,
  ) {}
  get nTokens(): number {
    return this.#disposed ? 0 : this.reply.nTokens;
  }
  get nEmbd(): number {
    return this.#disposed ? 0 : this.reply.nEmbd;
  }
  toFloat32Array(): Float32Array {
    if (this.#disposed) throw new MinigptError('ERR_DISPOSED', 'the image embedding has been disposed');
    return this.reply.rows.slice();
  }
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (!this.host.dead) void this.host.request({ t: 'disposeEmbedding', embedding: this.id }).catch(() => {});
  }
}

class RemoteGeneration implements NativeGeneration {
  readonly #outputs: GenerationOutput[] = [];
  #waiting: ((output: GenerationOutput) => void) | undefined;
  #ended = false;
  #consumed = 0;

  constructor(
    private readonly host: HostConnection,
    private readonly id: number,
    started: Promise<unknown>,
    private readonly onStats: (s: NativeSessionStats) => void,
  ) {
    host.follow(id, this);
    // A generation that could not start (a bad prompt part, the process gone) ends with why.
    started.catch((err: MinigptError) => this.fail(err));
  }

  /** @internal From HostConnection: the host's next output. */
  push(output: GenerationOutput): void {
    if ('end' in output) this.host.unfollow(this.id);
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting) waiting(output);
    else this.#outputs.push(output);
  }

  /** @internal The generation cannot go on: the process died, or it never started. */
  fail(err: MinigptError): void {
    this.push({ end: { stopReason: 'error', error: { code: err.code, message: err.message } } });
  }

  async next(): Promise<NativePieces | NativeEnd> {
    if (this.#ended) return { done: true, stopReason: 'abort' };
    const output = this.#outputs.shift() ?? (await new Promise<GenerationOutput>((resolve) => (this.#waiting = resolve)));
    if ('pieces' in output) {
      this.onStats(output.stats);
      // Credit goes back in halves of the window: one message per many tokens.
      this.#consumed += output.pieces.length / 2;
      if (this.#consumed >= GENERATION_WINDOW / 2) {
        this.host.signal({ t: 'credit', generation: this.id, pieces: this.#consumed });
        this.#consumed = 0;
      }
      return output.pieces;
    }
    this.#ended = true;
    if (output.stats) this.onStats(output.stats);
    return { done: true, stopReason: output.end.stopReason as NativeEnd['stopReason'], ...(output.end.error ? { error: fromWire(output.end.error) } : {}) };
  }

  abort(): void {
    this.host.signal({ t: 'abortGeneration', generation: this.id });
  }
}

class RemoteSession implements NativeSession {
  #stats: NativeSessionStats = { ...emptyStats };
  constructor(
    private readonly host: HostConnection,
    private readonly id: number,
    private readonly created: Promise<unknown>,
  ) {
    created.catch(() => {});
  }

  generate(parts: NativePromptPart[], options: NativeGenerateOptions): NativeGeneration {
    const generation = this.host.newId();
    const wire: WirePromptPart[] = parts.map((p) => (p instanceof RemoteEmbedding ? { embedding: p.id } : (p as Exclude<NativePromptPart, NativeEmbedding>)));
    const started = this.created.then(() => this.host.request({ t: 'generate', session: this.id, generation, parts: wire, options }));
    return new RemoteGeneration(this.host, generation, started, (s) => (this.#stats = s));
  }

  stats(): NativeSessionStats {
    return { ...this.#stats };
  }

  reset(): void {
    this.#stats = { ...this.#stats, contextUsed: 0 };
    void this.host.request({ t: 'reset', session: this.id }).catch(() => {});
  }

  dispose(): void {
    void this.host.request({ t: 'disposeSession', session: this.id }).catch(() => {});
  }
}

class RemoteModel implements NativeModel {
  constructor(
    private readonly host: HostConnection,
    private readonly loadedInfo: NativeModelInfo,
  ) {}

  info(): NativeModelInfo {
    return this.loadedInfo;
  }

  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean, abort?: NativeAbortFlag): Promise<Int32Array> {
    return this.host.request({ t: 'tokenize', text, addSpecial, parseSpecial }, abort ? { flag: abort } : {});
  }

  detokenize(tokens: Int32Array, special: boolean): Promise<string> {
    return this.host.request({ t: 'detokenize', tokens, special });
  }

  async encodeImage(rgb: Uint8Array, width: number, height: number, abort?: NativeAbortFlag): Promise<NativeEmbedding> {
    const embedding = this.host.newId();
    const reply = await this.host.request<EncodeReply>({ t: 'encode', embedding, rgb, width, height }, abort ? { flag: abort } : {});
    return new RemoteEmbedding(this.host, embedding, reply);
  }

  createSession(options: { contextSize: number; batchSize?: number; threads?: number; parallel?: number }): NativeSession {
    const session = this.host.newId();
    return new RemoteSession(this.host, session, this.host.request({ t: 'createSession', session, options }));
  }

  async trimIdleContexts(): Promise<void> {
    if (this.host.dead) return;
    await this.host.request({ t: 'trim' }).catch(() => {});
  }

  async dispose(): Promise<void> {
    if (!this.host.dead) await this.host.request({ t: 'dispose' }).catch(() => {});
    await this.host.close();
  }
}

/**
 * Asks RPC servers for their devices from a short-lived process: ggml's client would end this
 * one if a server died between our check and its own calls.
 */
export async function rpcDevicesInIsolation(endpoints: string[], bindingConfig: BindingConfig, explain: DeathExplainer): Promise<NativeDevice[]> {
  const host = new HostConnection(explain);
  try {
    return await host.request<NativeDevice[]>({ t: 'rpcDevices', binding: bindingConfig, endpoints });
  } finally {
    await host.close();
  }
}

/**
 * Starts a process, loads the model there, and returns it behind the native interface.
 * @param explain Turns the process's death into the error callers get (it may probe RPC servers).
 */
export async function loadInIsolation(
  options: LoadRequest,
  bindingConfig: BindingConfig,
  onProgress: ((p: number) => void) | undefined,
  abort: NativeAbortFlag | undefined,
  explain: DeathExplainer,
): Promise<NativeModel> {
  const host = new HostConnection(explain);
  try {
    const reply = await host.request<LoadReply>({ t: 'load', binding: bindingConfig, options }, { ...(abort ? { flag: abort } : {}), ...(onProgress ? { onProgress } : {}) });
    return new RemoteModel(host, reply.info);
  } catch (err) {
    await host.close();
    throw err;
  }
}
