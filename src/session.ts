/**
 * Conversations: prompts with text and images in, streamed answers out.
 * @module
 */
import { defaultContextSize } from './context-size.js';
import { AbortedError, DisposedError, InvalidArgumentError, MinigptError, throwIfAborted } from './errors.js';
import { ImageEmbedding, nativeOf, retain } from './embedding.js';
import { isImageInput, type ImageInput } from './image.js';
import { AsyncLock, DisposeGuard } from './lifetime.js';
import type { NativeEnd, NativeGeneration, NativeModel, NativeSession, NativeSessionStats } from './native/binding.js';
import { StopDetector, type Piece } from './stop.js';
import { PromptBuilder, type ConversationPart, type ConversationTurn, type PromptFormat } from './prompt-parts.js';
import { builtinStops, isBuiltinTemplate, type BuiltinTemplate } from './prompts.js';
import { checkKeys, checkWellFormed, invalid, optBoolean, optInteger, optNumber, optSignal, optString, optThreads } from './validate.js';

export type { Piece } from './stop.js';

/** Options of {@link Model.createSession}. */
export interface SessionOptions {
  /** Context size in tokens. Defaults to loadModel's `contextSize`, else the model's training context (at most 4096). */
  contextSize?: number;
  /** System prompt, the first message of the conversation (ignored with `template: 'none'`). */
  systemPrompt?: string;
  /**
   * How turns are formatted: `'auto'` (default) uses the projector's own conversation format
   * when it has one (MiniGPT-4's, from a BLIP-2 projector GGUF), else the chat template in the
   * model's GGUF; `'minigpt4-v0'` and `'minigpt4-llama2'` pick MiniGPT-4's formats by name;
   * `'none'` evaluates content exactly as given (BOS once at the start, special tokens in the
   * text parsed, images where they stand), for custom formats such as MiniGPT-4's; any other
   * string is used as a Jinja chat template.
   */
  template?: 'auto' | 'none' | (string & {});
  /** Threads for this session. Defaults to loadModel's `threads`. */
  threads?: number;
  /** Largest number of tokens evaluated in one batch. Defaults to 512. */
  batchSize?: number;
  /**
   * Whether special tokens written in the caller's text (the system prompt, the content of
   * turns) are parsed as such, e.g. `<|im_end|>` as the end-of-turn token. Defaults to `false`
   * with a chat template: only the template's own markup is special, so a user cannot close
   * their turn or open a system one; the model's answers are plain text too. With
   * `template: 'none'` the default is `true` (the caller writes the whole format).
   */
  parseSpecial?: boolean;
}

/** One part of a prompt: text, an encoded image, or any image input (encoded on the fly). */
export type ContentPart = string | ImageEmbedding | Exclude<ImageInput, string>;
/** What a turn says: text alone, or text and images in order. */
export type Content = string | ContentPart[];

/**
 * One message of a whole conversation given at once ({@link Session.chat}), as chat APIs send
 * it: the earlier turns, answers included, then the user's new message.
 */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: Content;
}

/** Options of {@link Session.stream} and {@link Session.ask}. */
export interface StreamOptions {
  /** Most tokens to generate. Defaults to 256. */
  maxTokens?: number;
  /** Sampling temperature; 0 is greedy and deterministic. Defaults to 0.8. */
  temperature?: number;
  /** Keep only the K most likely tokens (0: off). Defaults to 40. */
  topK?: number;
  /** Nucleus sampling threshold (1: off). Defaults to 0.95. */
  topP?: number;
  /** Drop tokens below minP x the top probability (0: off). Defaults to 0.05. */
  minP?: number;
  /** Penalty for repeating recent tokens (1: off). Defaults to 1. */
  repeatPenalty?: number;
  /** OpenAI's frequency penalty: subtracted from a token's logit once per time it appeared in the last 64 tokens (-2 to 2; 0: off). Defaults to 0. */
  frequencyPenalty?: number;
  /** OpenAI's presence penalty: subtracted from a token's logit if it appeared in the last 64 tokens (-2 to 2; 0: off). Defaults to 0. */
  presencePenalty?: number;
  /** Seed of the sampler's random numbers. Defaults to a random seed. */
  seed?: number;
  /** Stop before this string or any of these strings (none empty); the stop string itself is not returned. */
  stop?: string | string[];
  /** Stops generation within one token; the stream then rejects with an AbortedError. */
  signal?: AbortSignal;
}

/**
 * Why a stream ended: `'stop'` (the model ended its answer, or a stop string appeared),
 * `'length'` (`maxTokens` were generated), `'context'` (the context is full: the next request
 * fails with `ERR_CONTEXT_OVERFLOW` unless the session is reset or a larger one is used),
 * `'aborted'` (its signal, `reset()` or `dispose()` cut it), `'error'` (it rejected).
 */
export type FinishReason = 'stop' | 'length' | 'context' | 'aborted' | 'error';

/** What a stream returns when it ends (the generator's return value). */
export interface StreamResult {
  finishReason: FinishReason;
}

/** Counters of the last request and of the session's life (the native session's counters and these). */
export interface SessionStats extends NativeSessionStats {
  /** Positions the session may use: its `contextSize`. */
  contextSize: number;
  /** CPU threads the session computes with (the requested count, capped at the machine's CPUs). */
  threads: number;
  /** Why the last stream ended; null before the first one has ended. */
  finishReason: FinishReason | null;
}

/**
 * A stream's state, kept outside its generator so that its cleanup can run without it: from its
 * own finally, from reset() or dispose(), or from a finalizer once the iterator is collected
 * (nothing here may refer to the iterator, or it would never be collected).
 */
interface ActiveStream {
  hold?: { release(): void };
  unlock?: () => void;
  signal?: AbortSignal;
  onAbort: () => void;
  generation?: NativeGeneration;
  /** The native loop has ended and said so. */
  finished: boolean;
  /** True while the consumer holds a piece (the generator is suspended at a yield). */
  atYield: boolean;
  drained?: Promise<void>;
  /** Set by reset(): the stream ends (finishReason 'aborted') at its next step. */
  cut: boolean;
  turnsBefore: number;
  answer: string;
  // Until the stream settles on another, its end is a cut: by reset(), dispose() or a finalizer.
  finishReason: FinishReason;
  cleaned?: Promise<void>;
}

const streamKeys = ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'frequencyPenalty', 'presencePenalty', 'seed', 'stop', 'signal'] as const;
const sessionKeys = ['contextSize', 'systemPrompt', 'template', 'threads', 'batchSize', 'parseSpecial'] as const;

function validateStop(value: unknown): string[] {
  if (value === undefined) return [];
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) throw invalid('string or array of strings', 'stop', value);
  list.forEach((s: string, i) => {
    if (s.length === 0) throw new InvalidArgumentError(`stop${typeof value === 'string' ? '' : `[${i}]`} is an empty string, which would end every answer before it starts; leave it out`);
    checkWellFormed(s, typeof value === 'string' ? 'stop' : `stop[${i}]`);
  });
  return list;
}

/**
 * The one place the sampling defaults live (StreamOptions' docs state them). Every value is sent
 * to native code on each request; native/sampler.h's copies are only a fallback for callers of
 * the raw binding.
 */
const STREAM_DEFAULTS = {
  maxTokens: 256,
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  frequencyPenalty: 0,
  presencePenalty: 0,
  /** The window the repeat, frequency and presence penalties look at; not an option. */
  repeatLastN: 64,
} as const;

function validateStreamOptions(options: StreamOptions) {
  const o = checkKeys(options, streamKeys, 'stream options');
  const d = STREAM_DEFAULTS;
  return {
    native: {
      maxTokens: optInteger(o, 'maxTokens', 0, 1_000_000, d.maxTokens),
      temperature: optNumber(o, 'temperature', 0, 100, d.temperature),
      topK: optInteger(o, 'topK', 0, 1_000_000, d.topK),
      topP: optNumber(o, 'topP', 0, 1, d.topP),
      minP: optNumber(o, 'minP', 0, 1, d.minP),
      repeatPenalty: optNumber(o, 'repeatPenalty', 0.01, 100, d.repeatPenalty),
      frequencyPenalty: optNumber(o, 'frequencyPenalty', -2, 2, d.frequencyPenalty),
      presencePenalty: optNumber(o, 'presencePenalty', -2, 2, d.presencePenalty),
      repeatLastN: d.repeatLastN,
      seed: optInteger(o, 'seed', 0, 0xfffffffe),
    },
    stop: validateStop(o.stop),
    signal: optSignal(o),
  };
}

const NATIVE_FINISH: Record<NativeEnd['stopReason'], FinishReason> = {
  eos: 'stop',
  maxTokens: 'length',
  contextFull: 'context',
  abort: 'aborted',
  error: 'error',
};

// A stream whose iterator was dropped without being finished or closed would hold its session's
// lock (and its native loop) for ever: when the iterator is collected, its cleanup runs.
const abandoned = new FinalizationRegistry<{ session: Session; active: ActiveStream }>(({ session, active }) => {
  void session[finishStream](active);
});

const finishStream = Symbol('finishStream');

/** What a stream answers: one more user turn, or a whole conversation. */
type TurnRequest = { content: Content } | { messages: ChatMessage[] };

/**
 * @internal
 * What a session needs of its model. `Model` passes itself; the session sees only this, so the
 * imports run one way (model → session).
 */
export interface SessionModel {
  readonly info: { readonly contextLength: number; readonly chatTemplate: string | null; readonly promptTemplate: string | null };
  readonly defaults: { readonly threads: number; readonly contextSize?: number; readonly parallelSessions: number };
  readonly tokenText: { readonly bos: string | null; readonly eos: string | null; readonly addsBos: boolean };
  encodeImage(input: ImageInput, options?: { signal?: AbortSignal }): Promise<ImageEmbedding>;
}

/**
 * A conversation with a model. Turns are evaluated incrementally: each request re-uses the
 * context's memory of earlier turns and evaluates only what is new. Streams on one session run
 * one after another, in the order they were started.
 */
export class Session {
  #model: SessionModel;
  #native: NativeSession;
  #guard = new DisposeGuard('This session');
  #lock = new AsyncLock();
  #prompt: PromptBuilder;
  #builtin: BuiltinTemplate | undefined;
  #turns: ConversationTurn[] = [];
  #releases: Array<() => void> = [];
  #owned: ImageEmbedding[] = [];
  #detach: (s: Session) => void;
  #active: ActiveStream | undefined;
  #contextSize: number;
  #threads: number;
  #finishReason: FinishReason | null = null;

  /** @internal */
  constructor(model: SessionModel, nativeModel: NativeModel, options: SessionOptions, detach: (s: Session) => void) {
    const o = checkKeys(options, sessionKeys, 'createSession options');
    this.#contextSize = optInteger(o, 'contextSize', 16, 1 << 24, model.defaults.contextSize ?? defaultContextSize(model.info.contextLength));
    this.#threads = optThreads(o, 'threads', model.defaults.threads);
    const batchSize = optInteger(o, 'batchSize', 32, 1 << 16, 512);
    const systemPrompt = optString(o, 'systemPrompt');
    if (systemPrompt !== undefined) checkWellFormed(systemPrompt, 'systemPrompt');
    const template = optString(o, 'template') ?? 'auto';
    const projectorTemplate = model.info.promptTemplate ?? undefined;
    let format: PromptFormat;
    if (isBuiltinTemplate(template)) format = { builtin: template };
    else if (template === 'none') format = { asWritten: true };
    else if (template === 'auto' && isBuiltinTemplate(projectorTemplate)) format = { builtin: projectorTemplate };
    else if (template === 'auto') {
      if (!model.info.chatTemplate) {
        throw new MinigptError('ERR_TEMPLATE', "This model's GGUF has no chat template; pass createSession({ template: 'none' }) to send prompts as written, or a Jinja template string");
      }
      format = { jinja: model.info.chatTemplate };
    } else format = { jinja: template };
    if ('builtin' in format) this.#builtin = format.builtin;
    const parseSpecial = optBoolean(o, 'parseSpecial', 'asWritten' in format);
    const tt = model.tokenText;
    this.#prompt = new PromptBuilder({ format, systemPrompt, parseSpecial, tokenText: { bosText: tt.bos, eosText: tt.eos, addsBos: tt.addsBos } });
    this.#model = model;
    this.#detach = detach;
    this.#native = nativeModel.createSession({ contextSize: this.#contextSize, batchSize, threads: this.#threads, parallel: model.defaults.parallelSessions });
  }

  /** Counters of the last request and of the session's life. */
  get stats(): SessionStats {
    this.#guard.throwIfDisposed();
    return { ...this.#native.stats(), contextSize: this.#contextSize, threads: this.#threads, finishReason: this.#finishReason };
  }

  /** True after `dispose()`. */
  get disposed(): boolean {
    return this.#guard.disposed;
  }

  /**
   * Sends `content` as the next user turn and streams the answer, piece by piece. Each piece
   * holds whole characters; its `token` is the id that produced it. A stream that ends inside a
   * character (say `maxTokens` cut a multi-byte one) ends its last piece with U+FFFD in place of
   * the incomplete bytes. The generator returns why it ended ({@link StreamResult}); so does
   * `session.stats.finishReason`.
   * @example
   * for await (const { text } of session.stream(['What is in this picture?', image], { maxTokens: 100 })) process.stdout.write(text);
   * @throws ContextOverflowError `ERR_CONTEXT_OVERFLOW` when the conversation no longer fits
   * @throws AbortedError `ERR_ABORTED` when `signal` aborts (the session stays usable)
   * @throws DisposedError `ERR_DISPOSED` when the session (or its model) is disposed before or during the stream
   */
  stream(content: Content, options: StreamOptions = {}): AsyncGenerator<Piece, StreamResult, undefined> {
    return this.#start({ content }, options);
  }

  /**
   * Streams the answer to a whole conversation: `messages` (system, user and assistant turns,
   * the last one the user's) replace the session's conversation, and the answer follows them,
   * as {@link Session.stream} gives it. What the context already holds of the conversation is
   * not evaluated again (a follow-up that repeats the earlier turns evaluates only its new
   * message), so a stateless caller (an HTTP API) gets the speed of a kept session. A `system`
   * message stands in for the session's `systemPrompt`. MiniGPT-4's built-in formats have no
   * system turn: a system message there is an `ERR_INVALID_ARGUMENT`. Pass images that recur
   * in later requests as the same {@link ImageEmbedding} (`model.encodeImage`): an image given
   * as bytes or a path is encoded anew each time, and the context is reused only up to it.
   * @example
   * session.chat([{ role: 'user', content: ['What is this?', image] }, { role: 'assistant', content: 'A cat.' }, { role: 'user', content: 'What colour?' }])
   */
  chat(messages: ChatMessage[], options: StreamOptions = {}): AsyncGenerator<Piece, StreamResult, undefined> {
    return this.#start({ messages }, options);
  }

  #start(request: TurnRequest, options: StreamOptions): AsyncGenerator<Piece, StreamResult, undefined> {
    const active: ActiveStream = {
      onAbort: () => active.generation?.abort(),
      finished: false,
      atYield: false,
      cut: false,
      turnsBefore: 0,
      answer: '',
      finishReason: 'aborted',
    };
    const iterator = this.#run(request, options, active);
    abandoned.register(iterator, { session: this, active }, active);
    return iterator;
  }

  /** @internal The stream's cleanup, once, whoever asks first. */
  [finishStream](active: ActiveStream): Promise<void> {
    active.cleaned ??= (async () => {
      abandoned.unregister(active);
      active.signal?.removeEventListener('abort', active.onAbort);
      if (active.generation && !active.finished) {
        active.generation.abort();  // the consumer stopped early, or the session was disposed or reset: end the loop and wait for it
        await this.#drain(active);
      }
      if (this.#turns.length > active.turnsBefore) this.#turns.push({ role: 'assistant', parts: [active.answer] });
      if (this.#active === active) this.#active = undefined;
      this.#finishReason = active.finishReason;
      active.hold?.release();
      active.unlock?.();
    })();
    return active.cleaned;
  }

  async *#run(request: TurnRequest, options: StreamOptions, active: ActiveStream): AsyncGenerator<Piece, StreamResult, undefined> {
    const opts = validateStreamOptions(options);
    const checked = 'content' in request ? this.#checkContent(request.content) : this.#checkMessages(request.messages);
    throwIfAborted(opts.signal);
    active.hold = this.#guard.hold();
    active.turnsBefore = this.#turns.length;
    try {
      // Queued behind earlier streams of this session; dispose() rejects the wait with ERR_DISPOSED.
      active.unlock = await this.#lock.acquire(opts.signal);
      this.#active = active;
      active.signal = opts.signal;
      opts.signal?.addEventListener('abort', active.onAbort, { once: true });
      if (Array.isArray(checked)) {
        const user: ConversationTurn = { role: 'user', parts: await this.#encodeParts(checked, opts.signal, this.#owned) };
        throwIfAborted(opts.signal);
        if (this.#guard.disposed) throw new DisposedError('This session');
        if (active.cut) return { finishReason: active.finishReason };
        this.#turns.push(user);
        for (const p of user.parts) if (p instanceof ImageEmbedding) this.#releases.push(p[retain]());
      } else {
        const owned: ImageEmbedding[] = [];
        const turns: ConversationTurn[] = [];
        try {
          for (const m of checked.messages) turns.push({ role: m.role, parts: await this.#encodeParts(m.parts, opts.signal, owned) });
          throwIfAborted(opts.signal);
          if (this.#guard.disposed) throw new DisposedError('This session');
        } catch (err) {
          for (const e of owned) void e.dispose();
          throw err;
        }
        if (active.cut) {
          for (const e of owned) void e.dispose();
          return { finishReason: active.finishReason };
        }
        // The new conversation's images are held before the old one's are let go: an image in
        // both (the same embedding) must not be freed in between.
        const releases = turns.flatMap((t) => t.parts.filter((p): p is ImageEmbedding => p instanceof ImageEmbedding).map((p) => p[retain]()));
        this.#releaseImages();
        this.#releases = releases;
        this.#owned = owned;
        this.#turns = turns;
        active.turnsBefore = turns.length - 1;
      }
      const prompt = await this.#prompt.build(this.#turns, opts.signal);
      if (active.cut) return { finishReason: active.finishReason };
      const generation = this.#native.generate(prompt, opts.native);
      active.generation = generation;
      const stops = new StopDetector(this.#builtin ? [...builtinStops(this.#builtin), ...opts.stop] : opts.stop);
      let answered = false;
      let end: NativeEnd;
      for (;;) {
        // Disposed (while the consumer held a piece, or while we waited): the stream ends here.
        if (this.#guard.disposed) throw new DisposedError('This session');
        const batch = await generation.next();
        if (!Array.isArray(batch)) {
          active.finished = true;
          end = batch;
          if (this.#guard.disposed) throw new DisposedError('This session');
          if (batch.error) {
            if (!answered) this.#turns.length = active.turnsBefore;
            // Already typed by errors.ts's errorFromCode (the binding's error factory).
            throw batch.error;
          }
          if (opts.signal?.aborted && !stops.stopped) {
            throw new AbortedError('The stream was aborted', { cause: opts.signal.reason });
          }
          break;
        }
        for (let i = 0; i < batch.length; i += 2) {
          if (opts.signal?.aborted || this.#guard.disposed || active.cut) break;  // nothing more reaches the consumer
          for (const out of stops.push({ token: batch[i] as number, text: batch[i + 1] as string })) {
            active.answer += out.text;
            answered = true;
            active.atYield = true;
            try {
              yield out;
            } finally {
              active.atYield = false;
            }
            if (this.#guard.disposed) throw new DisposedError('This session');
            if (active.cut) return { finishReason: active.finishReason };
          }
          if (stops.stopped) {
            generation.abort();
            break;
          }
        }
      }
      if (active.cut) return { finishReason: active.finishReason };
      for (const out of stops.flush()) {
        active.answer += out.text;
        active.atYield = true;
        try {
          yield out;
        } finally {
          active.atYield = false;
        }
      }
      active.finishReason = stops.stopped ? 'stop' : NATIVE_FINISH[end.stopReason];
      return { finishReason: active.finishReason };
    } catch (err) {
      active.finishReason = err instanceof MinigptError && (err.code === 'ERR_ABORTED' || err.code === 'ERR_DISPOSED') ? 'aborted' : 'error';
      throw err;
    } finally {
      await this[finishStream](active);
    }
  }

  // Runs an aborted generation to its end, once, whoever asks first (the stream, reset() or dispose()).
  #drain(active: ActiveStream): Promise<void> {
    const generation = active.generation;
    if (!generation) return Promise.resolve();
    active.drained ??= (async () => {
      while (Array.isArray(await generation.next()));
    })();
    return active.drained;
  }

  /** Like {@link Session.stream}, but resolves with the whole answer. */
  async ask(content: Content, options: StreamOptions = {}): Promise<string> {
    let text = '';
    for await (const piece of this.stream(content, options)) text += piece.text;
    return text;
  }

  /**
   * Forgets the conversation (the system prompt stays). A running stream is cut first: it ends
   * (its result's `finishReason` is `'aborted'`) without waiting for its consumer, so `reset()`
   * may be awaited inside a `for await` over that stream. Streams queued behind it run first.
   */
  async reset(): Promise<void> {
    using _hold = this.#guard.hold();
    const active = this.#active;
    if (active) {
      active.cut = true;
      active.generation?.abort();
      // The consumer holds a piece and may be the one awaiting us: finish the stream here.
      if (active.atYield) await this[finishStream](active);
    }
    const unlock = await this.#lock.acquire();
    try {
      this.#native.reset();
      this.#turns = [];
      this.#releaseImages();
    } finally {
      unlock();
    }
  }

  /**
   * Stops a running stream (its consumer's next read rejects with `ERR_DISPOSED`), rejects the
   * streams queued behind it with `ERR_DISPOSED`, and frees the context. Idempotent.
   */
  async dispose(): Promise<void> {
    if (!this.#guard.disposed) this.#detach(this);
    const closing = this.#guard.dispose();  // from here on, new work is refused
    this.#lock.close(() => new DisposedError('This session'));
    const active = this.#active;
    if (active) {
      active.generation?.abort();
      // The consumer holds a piece and may never ask for the next one (an abandoned
      // iterator): finish the stream here instead of waiting for it.
      if (active.atYield) await this[finishStream](active);
    }
    if (await closing) {
      this.#native.dispose();
      this.#releaseImages();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #releaseImages(): void {
    for (const release of this.#releases.splice(0)) release();
    for (const owned of this.#owned.splice(0)) void owned.dispose();
  }

  #checkContent(content: Content, name = 'content'): ContentPart[] {
    const parts = typeof content === 'string' ? [content] : content;
    if (!Array.isArray(parts)) throw invalid('string or array of strings and images', name, content);
    parts.forEach((p, i) => {
      if (typeof p === 'string') checkWellFormed(p, `${name}[${i}]`);
      else if (p instanceof ImageEmbedding) {
        if (p.owner !== this.#model) throw new InvalidArgumentError(`${name}[${i}] is an image embedding of another model`);
        if (p.disposed) throw new InvalidArgumentError(`${name}[${i}] is a disposed image embedding`);
      } else if (!isImageInput(p)) throw invalid('string, ImageEmbedding or image input', `${name}[${i}]`, p);
    });
    return parts;
  }

  #checkMessages(messages: ChatMessage[]): { messages: Array<{ role: ChatMessage['role']; parts: ContentPart[] }> } {
    if (!Array.isArray(messages) || messages.length === 0) throw invalid('non-empty array of messages', 'messages', messages);
    const out = messages.map((m, i) => {
      if (typeof m !== 'object' || m === null) throw invalid('object with role and content', `messages[${i}]`, m);
      if (m.role !== 'system' && m.role !== 'user' && m.role !== 'assistant') throw invalid("'system', 'user' or 'assistant'", `messages[${i}].role`, m.role);
      if (m.role === 'system' && this.#builtin) {
        throw new InvalidArgumentError(`messages[${i}] is a system message, but this model's conversation format (${this.#builtin}) has no system turn; leave it out`);
      }
      const parts = this.#checkContent(m.content, `messages[${i}].content`);
      if (m.role !== 'user' && parts.some((p) => typeof p !== 'string')) throw new InvalidArgumentError(`messages[${i}] (${m.role}) holds an image; only user messages may`);
      return { role: m.role, parts };
    });
    if (out[out.length - 1]!.role !== 'user') throw new InvalidArgumentError(`the last message is the ${out[out.length - 1]!.role}'s; chat() answers a user message, so end with one`);
    return { messages: out };
  }

  async #encodeParts(parts: ContentPart[], signal: AbortSignal | undefined, owned: ImageEmbedding[]): Promise<ConversationPart[]> {
    const out: ConversationPart[] = [];
    for (const p of parts) {
      if (typeof p === 'string' || p instanceof ImageEmbedding) out.push(p);
      else {
        const embedding = await this.#model.encodeImage(p, { signal });
        owned.push(embedding);
        out.push(embedding);
      }
    }
    return out;
  }
}
