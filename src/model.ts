/**
 * Loading a model and what a loaded model can do.
 * @module
 */
import { availableParallelism, freemem, totalmem } from 'node:os';
import { AbortedError, DisposedError, ImageError, InvalidArgumentError, ModelLoadError, throwIfAborted } from './errors.js';
import { ImageEmbedding } from './embedding.js';
import { decodeImage, type DecodeOptions, type ImageInput } from './image.js';
import { DisposeGuard } from './lifetime.js';
import { checkLoadedFiles, planLoadOffThread } from './load-plan/index.js';
import { binding, bindingConfigForChild, type NativeModel } from './native/binding.js';
import { explainDeath, loadInIsolation } from './isolate/index.js';
import { Session, type SessionOptions } from './session.js';
import { prestartTemplateRenderer } from './template.js';
import { checkKeys, checkWellFormed, optBoolean, optFunction, optInteger, optSignal, optThreads } from './validate.js';
import { resolveForLoad, type LoadDownloadOption } from './models/index.js';
import { checkRpcServers } from './rpc/index.js';

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /**
   * The language model GGUF: a path, a `file:` URL string or a `URL`, or a remote file made
   * local first (see `download`): `hf:<owner>/<repo>/<file.gguf>[#<revision>]`,
   * `hf:<owner>/<repo>:<quant>` (with the repo's mmproj as the projector unless one is given),
   * an https URL, or a catalog name such as `smolvlm-500m`.
   */
  model: string | URL;
  /** The image projector GGUF (an mmproj file), as `model`. Without it the model is text-only. */
  projector?: string | URL;
  /**
   * CPU threads for evaluation and image encoding. Defaults to the number of logical CPUs, at
   * most 8; a larger count is capped at the logical CPUs this process may use (more threads
   * than cores only wait for each other).
   */
  threads?: number;
  /** Default context size (tokens) of sessions. Defaults to the model's training context, at most 4096. */
  contextSize?: number;
  /**
   * Layers of the LLM to put on a GPU when a GPU backend is present: a count, `'max'` (all), or
   * `'auto'` (as many as the GPUs' free memory holds beside the projector, the KV cache of a
   * `contextSize` context and a reserve for compute buffers; none without a GPU).
   * The projector goes to the GPU whenever any layer does. Defaults to 0 (CPU).
   */
  gpuLayers?: number | 'auto' | 'max';
  /**
   * How many sessions share one llama.cpp context (each its own sequence of it). Sessions that
   * share a context and generate at the same moment are decoded together, one batch per token
   * for all of them, so N streams cost far less than N times one. The context is allocated for
   * all N sessions (N x contextSize tokens of KV cache) when the first of them starts; the
   * (N+1)th session opens a new context. Only sessions with the same contextSize, batchSize and
   * threads share. Defaults to 1 (a context per session).
   */
  parallelSessions?: number;
  /**
   * Memory-map the weights (fast, shared page cache). Defaults to `true`. While mapped, the
   * files must not be truncated or rewritten in place: reading a page that is gone kills the
   * process with SIGBUS, which no error can catch (as with llama.cpp or SQLite). Replace a
   * file by renaming a new one over it, or pass `false` to read the weights into memory.
   * A file found shorter after the load than its header requires is a {@link ModelLoadError}.
   */
  useMmap?: boolean;
  /**
   * `host:port` of `minigpt rpc-server`s (ggml's RPC protocol) to hold layers of the model:
   * with them, `gpuLayers` defaults to `'max'` and the layers are shared over the servers'
   * devices (then this machine's GPUs) by `tensorSplit`, else by their free memory; layers past
   * `gpuLayers` stay on this CPU. The projector stays on this machine. Each server is checked
   * (connect and the protocol's HELLO) before the load: one that is down, refuses, or speaks
   * another version rejects with `ERR_BACKEND_LOAD` naming it. The protocol has no
   * authentication: use servers on a private network or a tunnel (docs/rpc.md).
   */
  rpcServers?: string[];
  /**
   * Runs the model in a process of its own, behind the same API: what kills that process (a
   * GPU driver reset, the OOM killer, an RPC server going away, on which ggml's client aborts)
   * rejects the running and later calls with `ERR_BACKEND_LOST` instead of ending the app, which
   * can then load the model again. Default: true with `rpcServers`, else false.
   */
  isolate?: boolean;
  /** With `rpcServers`: each device's share of the layers, the servers' devices first (in order), then local GPUs. */
  tensorSplit?: number[];
  /** Called with load progress in (0, 1], increasing. If it throws, loading is aborted with that error as `cause`. */
  onProgress?: (progress: number) => void;
  /** Aborts the load (and a download it makes, leaving a part file the next load resumes). */
  signal?: AbortSignal;
  /**
   * Whether a `model` or `projector` that names a remote file (an `hf:` URI, an https URL or a
   * catalog name) may be downloaded into the cache first: `true` (the default), `false` to use
   * only what is cached, or the options of {@link pullModel} (e.g. `{ onProgress }`, `token`).
   */
  download?: LoadDownloadOption;
}

/** What a loaded model is. */
export interface ModelInfo {
  /** `general.architecture`, e.g. "llama". */
  architecture: string;
  /** llama.cpp's one-line description (type, size, quantization). */
  description: string;
  /** Parameter count of the language model. */
  parameters: number;
  /** Training context length. */
  contextLength: number;
  /** Embedding (hidden) size of the language model. */
  embeddingSize: number;
  /** Vocabulary size. */
  vocabularySize: number;
  /** Jinja chat template from the GGUF, or null. */
  chatTemplate: string | null;
  /** Whether images can be given (a projector with a vision encoder is loaded). */
  hasVision: boolean;
  /** The projector's type ("mlp" for LLaVA-1.5, "blip2" for MiniGPT-4 / BLIP-2), or null without one. */
  projectorType: string | null;
  /** The conversation format the projector asks for (e.g. "minigpt4-v0"), or null. */
  promptTemplate: string | null;
  /** Tokens of the vocabulary's BOS and EOS. */
  bosToken: number;
  eosToken: number;
  /**
   * Layers of the LLM placed on a GPU, the output layer counted as one (so `layers + 1` is
   * everything); 0 without a GPU device. With `gpuLayers: 'auto'` this is what was fitted.
   */
  gpuLayers: number;
  /** The language model file loaded (in the model cache when `model` named a remote file). */
  modelPath: string;
  /** The projector file loaded, or null without one. */
  projectorPath: string | null;
}

/** How long a context no session uses is kept for the next session. */
const IDLE_CONTEXT_MS = 60_000;
/** Below this share of free memory, an unused context is freed at once. */
const LOW_MEMORY_FRACTION = 0.1;

const loadKeys = ['model', 'projector', 'threads', 'contextSize', 'gpuLayers', 'parallelSessions', 'useMmap', 'onProgress', 'signal', 'download', 'rpcServers', 'tensorSplit', 'isolate'] as const;

function resolveGpuLayers(value: unknown, rpc: boolean): number | 'auto' {
  if (value === undefined) return rpc ? -1 : 0;  // with RPC servers, the layers go to them
  if (value === 'auto' && rpc) throw new InvalidArgumentError("gpuLayers: 'auto' does not fit layers to RPC servers yet; give a number of layers, or 'max' (the default with rpcServers)");
  if (value === 'max') return -1;  // llama.cpp: every layer
  if (value === 'auto') return 'auto';
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 100000) return value;
  throw new InvalidArgumentError(`Expected integer between 0 and 100000, 'auto' or 'max' for gpuLayers but received ${JSON.stringify(value)}`);
}

function optTensorSplit(value: unknown, rpc: boolean): number[] | undefined {
  if (value === undefined) return undefined;
  if (!rpc) throw new InvalidArgumentError('tensorSplit is for models split over rpcServers (their devices, then local GPUs); without rpcServers it is not used');
  if (!Array.isArray(value) || value.length === 0 || value.some((v) => typeof v !== 'number' || !Number.isFinite(v) || v < 0) || !value.some((v) => v > 0)) {
    throw new InvalidArgumentError(`tensorSplit must be an array of shares >= 0 (at least one above 0), one per device, but received ${JSON.stringify(value)}`);
  }
  return [...value] as number[];
}

/**
 * Loads a GGUF language model and, optionally, its image projector. Everything slow runs
 * off the JS thread; the files are checked first so a bad file rejects with a
 * {@link ModelLoadError} instead of crashing the process.
 * @example
 * const model = await loadModel({ model: 'llava-v1.5-7b.Q4_K_M.gguf', projector: 'mmproj-model-f16.gguf' });
 * @throws ModelLoadError `ERR_MODEL_LOAD`, `ERR_PROJECTOR_LOAD`, `ERR_PROJECTOR_MISMATCH`
 * @throws AbortedError `ERR_ABORTED` when `signal` aborts
 * @throws DownloadError `ERR_DOWNLOAD` when a remote `model` or `projector` cannot be fetched or verified
 */
export async function loadModel(options: LoadModelOptions): Promise<Model> {
  const o = checkKeys(options, loadKeys, 'loadModel options');
  if (options === undefined) throw new InvalidArgumentError('loadModel needs an options object with at least `model`');
  const threads = optThreads(o, 'threads', Math.min(8, availableParallelism()));
  const contextSize = optInteger(o, 'contextSize', 16, 1 << 24);
  const rpc = o.rpcServers !== undefined;
  const gpuLayersOption = resolveGpuLayers(o.gpuLayers, rpc);
  const tensorSplit = optTensorSplit(o.tensorSplit, rpc);
  const isolate = optBoolean(o, 'isolate', rpc);
  const parallelSessions = optInteger(o, 'parallelSessions', 1, 256, 1);
  const useMmap = optBoolean(o, 'useMmap', true);
  const onProgress = optFunction<(p: number) => void>(o, 'onProgress');
  const signal = optSignal(o);
  throwIfAborted(signal);
  // hf: URIs, URLs and catalog names become files in the cache before any check reads them.
  const { modelPath, projectorPath } = await resolveForLoad(o.model, o.projector, o.download, signal);
  // Checked before ggml's RPC client sees them: it ends the process on a server that is down.
  const rpcServers = rpc ? (await checkRpcServers(o.rpcServers, 'rpcServers', signal)).map((e) => e.text) : undefined;

  // Loaded first (10 ms), so that the check's thread and the template renderer start beside it;
  // the first load of the addon and the start of that thread are a few ms of the JS thread each,
  // so they go in separate turns of the event loop (together they made a 22 ms block on a 2-core
  // machine, over a 60 Hz frame).
  const addon = binding();
  await new Promise((resolve) => setImmediate(resolve));
  const plan = await planLoadOffThread(
    { modelPath, projectorPath, gpuLayers: gpuLayersOption, contextSize, parallelSessions, devices: gpuLayersOption === 'auto' ? addon.systemInfo().devices : [] },
    signal,
  );
  throwIfAborted(signal);
  // Sessions render chat templates in a child process: start it now, while the weights load.
  if (plan.hasChatTemplate) prestartTemplateRenderer();
  const { gpuLayers } = plan;
  const flag = new addon.AbortFlag();
  let callbackError: unknown;
  const progress = onProgress
    ? (p: number) => {
        if (callbackError !== undefined) return;
        try {
          onProgress(p);
        } catch (err) {
          callbackError = err;
          flag.abort();
        }
      }
    : undefined;
  const onAbort = () => flag.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const loadOptions = {
      path: modelPath,
      ...(projectorPath !== undefined ? { projectorPath } : {}),
      projectorKind: plan.projectorKind ?? 'mtmd',
      threads,
      gpuLayers,
      useMmap,
      ...(rpcServers ? { rpcServers } : {}),
      ...(tensorSplit ? { tensorSplit } : {}),
    } as const;
    const native = isolate
      ? await loadInIsolation(loadOptions, bindingConfigForChild(), progress, flag, explainDeath(rpcServers))
      : await addon.loadModel(loadOptions, progress, flag);
    // Progress calls cross threads asynchronously: let the last ones run before deciding.
    await new Promise((resolve) => setImmediate(resolve));
    if (callbackError !== undefined) {
      native.dispose();
      throw new AbortedError('Model load aborted: onProgress threw', { cause: callbackError });
    }
    await checkLoadedFiles(native, plan.files);
    return new Model(native, {
      threads,
      contextSize,
      parallelSessions,
      projectorType: plan.projectorType,
      promptTemplate: plan.promptTemplate,
      resizeTo: plan.resizeTo,
      gpuLayers: rpcServers || addon.systemInfo().devices.some((d) => d.type === 'gpu' || d.type === 'igpu') ? gpuLayers : 0,
      modelPath,
      projectorPath: projectorPath ?? null,
    });
  } catch (err) {
    // The native load may notice the flag raised by a throwing onProgress first: name the cause.
    if (callbackError !== undefined) {
      if (err instanceof AbortedError && err.cause === callbackError) throw err;
      throw new AbortedError('Model load aborted: onProgress threw', { cause: callbackError });
    }
    if (err instanceof AbortedError) throw err;
    if (signal?.aborted) throw new AbortedError('Model load aborted', { cause: signal.reason });
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Options of {@link Model.tokenize}. */
export interface TokenizeOptions {
  /** Parse special tokens written in the text (e.g. `<|im_start|>`). Defaults to `false`. */
  special?: boolean;
  /** Add BOS (and whatever else the vocabulary adds). Defaults to `false`. */
  addBos?: boolean;
  /** Stops the tokenization; the promise then rejects with `ERR_ABORTED`. */
  signal?: AbortSignal;
}

/** Options of {@link Model.detokenize}. */
export interface DetokenizeOptions {
  /** Render special/control tokens as their text. Defaults to `false`. */
  special?: boolean;
}

/** A loaded language model (and projector). Create with {@link loadModel}. */
export class Model {
  #native: NativeModel;
  #guard = new DisposeGuard('This model');
  #children = new Set<{ dispose(): Promise<void> }>();
  #info: ModelInfo;
  #trimTimer: NodeJS.Timeout | undefined;
  #resizeTo: number | undefined;
  /** @internal */
  readonly defaults: { threads: number; contextSize?: number; parallelSessions: number };

  /** @internal */
  constructor(
    native: NativeModel,
    extra: { threads: number; contextSize?: number; parallelSessions: number; projectorType: string | null; promptTemplate: string | null; resizeTo?: number; gpuLayers: number; modelPath: string; projectorPath: string | null },
  ) {
    this.#native = native;
    this.#resizeTo = extra.resizeTo;
    this.defaults = { threads: extra.threads, contextSize: extra.contextSize, parallelSessions: extra.parallelSessions };
    const n = native.info();
    this.#info = Object.freeze({
      architecture: n.architecture ?? 'unknown',
      description: n.description,
      parameters: n.parameters,
      contextLength: n.contextLength,
      embeddingSize: n.embeddingSize,
      vocabularySize: n.vocabularySize,
      chatTemplate: n.chatTemplate,
      hasVision: n.hasVision,
      projectorType: n.hasVision ? extra.projectorType : null,
      promptTemplate: n.hasVision ? extra.promptTemplate : null,
      bosToken: n.bosToken,
      eosToken: n.eosToken,
      gpuLayers: extra.gpuLayers < 0 || extra.gpuLayers > n.layers ? n.layers + 1 : extra.gpuLayers,
      modelPath: extra.modelPath,
      projectorPath: extra.projectorPath,
    });
    this.tokenText = { bos: n.bosText, eos: n.eosText, addsBos: n.addBos };
  }

  /** @internal */
  readonly tokenText: { bos: string | null; eos: string | null; addsBos: boolean };

  /** What this model is. */
  get info(): ModelInfo {
    this.#guard.throwIfDisposed();
    return this.#info;
  }

  /** True after `dispose()`. */
  get disposed(): boolean {
    return this.#guard.disposed;
  }

  /**
   * Text to token ids, off the JS thread, in time linear in the text: the ids llama.cpp's
   * `llama_tokenize` gives.
   * @throws AbortedError `ERR_ABORTED` when `signal` aborts
   */
  async tokenize(text: string, options: TokenizeOptions = {}): Promise<Int32Array> {
    const o = checkKeys(options, ['special', 'addBos', 'signal'], 'tokenize options');
    if (typeof text !== 'string') throw new InvalidArgumentError(`Expected string for text but received ${typeof text}`);
    checkWellFormed(text, 'text');
    const special = optBoolean(o, 'special', false);
    const addBos = optBoolean(o, 'addBos', false);
    const signal = optSignal(o);
    throwIfAborted(signal);
    using _hold = this.#guard.hold();
    const flag = signal ? new (binding().AbortFlag)() : undefined;
    const onAbort = () => flag?.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await this.#native.tokenize(text, addBos, special, flag);
    } catch (err) {
      if (signal?.aborted) throw new AbortedError('Tokenization aborted', { cause: signal.reason });
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Token ids to text, off the JS thread.
   * @throws InvalidArgumentError `ERR_INVALID_ARGUMENT` unless every element is present and an
   * integer in [0, vocabularySize)
   */
  async detokenize(tokens: Int32Array | readonly number[], options: DetokenizeOptions = {}): Promise<string> {
    const o = checkKeys(options, ['special'], 'detokenize options');
    const special = optBoolean(o, 'special', false);
    if (!(tokens instanceof Int32Array) && !Array.isArray(tokens)) {
      throw new InvalidArgumentError('Expected Int32Array or array of integers for tokens');
    }
    const n = this.info.vocabularySize;
    // Int32Array.from would wrap 2**32 + 5 to 5 and turn holes into 0.
    for (let i = 0; i < tokens.length; i++) {
      const t: unknown = tokens[i];
      const hole = !(i in tokens);
      if (hole || typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= n) {
        const got = hole ? 'a hole (missing element)' : typeof t === 'number' ? String(t) : `a value of type ${typeof t}`;
        throw new InvalidArgumentError(`Expected a token id, an integer between 0 and ${n - 1}, for tokens[${i}] but received ${got}`);
      }
    }
    const ids = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    using _hold = this.#guard.hold();
    return await this.#native.detokenize(ids, special);
  }

  /**
   * Decodes a picture and runs the projector on it, off the JS thread.
   * @param input a file path, encoded bytes (JPEG, PNG, WebP, GIF, AVIF, TIFF...), raw pixels or a sharp instance
   * @param options.signal stops the encoder within one of its layers; the promise then rejects
   * and nothing of the encode is kept
   * @throws ImageError `ERR_NO_PROJECTOR`, `ERR_IMAGE_DECODE`, `ERR_ENCODE`
   * @throws AbortedError `ERR_ABORTED` when `signal` aborts
   */
  async encodeImage(input: ImageInput, options: DecodeOptions & { signal?: AbortSignal } = {}): Promise<ImageEmbedding> {
    const o = checkKeys(options, ['maxPixels', 'background', 'signal'], 'encodeImage options');
    const signal = optSignal(o);
    throwIfAborted(signal);
    using _hold = this.#guard.hold();
    if (!this.#info.hasVision) throw new ImageError('ERR_NO_PROJECTOR', 'This model was loaded without a projector; pass `projector` to loadModel() to use images');
    const resize = this.#resizeTo ? { width: this.#resizeTo, height: this.#resizeTo } : undefined;
    const rgb = await decodeImage(input, { maxPixels: options.maxPixels, background: options.background, resize });
    throwIfAborted(signal);
    const flag = signal ? new (binding().AbortFlag)() : undefined;
    const onAbort = () => flag?.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    let native;
    try {
      native = await this.#native.encodeImage(rgb.data, rgb.width, rgb.height, flag);
    } catch (err) {
      if (signal?.aborted) throw new AbortedError('Image encoding aborted', { cause: signal.reason });
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    // dispose() of the model waited for this encode: what it made dies with the model.
    if (this.#guard.disposed) {
      native.dispose();
      throw new DisposedError('This model');
    }
    const embedding = new ImageEmbedding(native, this);
    // Embeddings the user already disposed need no disposing with the model.
    for (const child of this.#children) if (child instanceof ImageEmbedding && child.disposed) this.#children.delete(child);
    this.#children.add(embedding);
    return embedding;
  }

  /**
   * Starts a conversation. Returns at once: the session's context is made ready off the JS
   * thread from now on (or taken over from a session of the same shape that was disposed), so
   * that its first answer starts as quickly as a warm session's.
   */
  createSession(options: SessionOptions = {}): Session {
    this.#guard.throwIfDisposed();
    clearTimeout(this.#trimTimer);
    const session = new Session(this, this.#native, options, (child) => {
      this.#children.delete(child);
      this.#scheduleTrim();
    });
    this.#children.add(session);
    return session;
  }

  // A context kept for the next session goes after a while without one, or at once when the
  // machine runs short of memory.
  #scheduleTrim(): void {
    if (this.#guard.disposed || [...this.#children].some((c) => c instanceof Session)) return;
    clearTimeout(this.#trimTimer);
    const trim = () => {
      if (!this.#guard.disposed) void this.#native.trimIdleContexts();
    };
    if (freemem() < totalmem() * LOW_MEMORY_FRACTION) return trim();
    this.#trimTimer = setTimeout(trim, IDLE_CONTEXT_MS);
    this.#trimTimer.unref();
  }

  /** Frees the model, its sessions (stopping their streams) and its image embeddings. Idempotent. */
  async dispose(): Promise<void> {
    const children = [...this.#children];
    this.#children.clear();
    await Promise.all(children.map((c) => c.dispose()));
    clearTimeout(this.#trimTimer);
    if (await this.#guard.dispose()) await this.#native.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

