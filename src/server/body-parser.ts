/**
 * @internal
 * Request bodies parsed off the JS thread. A 20 MB body with an image took the JS thread up to
 * ~370 ms to turn into a request (UTF-8, JSON.parse, the data URL checked and base64-decoded),
 * stalling every other client's stream; here a thread of the server's own does that work and
 * hands back the checked request with the decoded image bytes (transferred, not copied).
 * Small bodies are parsed inline: under {@link INLINE_MAX_BYTES} the round trip to the thread
 * costs more than the parse.
 */
import { Worker } from 'node:worker_threads';
import { DisposedError, InvalidArgumentError } from '../errors.js';
import { decodeChatBody, type DecodedImage, type DecodedRequest } from './body-decode.js';
import type { BodyBytes } from './http-io.js';
import { imageHash, readImageUrl, type HashedImage, type RemoteImagePolicy } from './images.js';
import { HttpError, type ChatRequest } from './openai.js';

/**
 * Bodies up to this size are parsed on the JS thread. Measured on one core of an Intel Xeon
 * (node 20): a round trip to the thread costs 0.1 to 0.2 ms, about what a 64 KiB body with an
 * image takes to parse; a 1 MiB body takes ~2 ms, a 20 MB one 100 to 300 ms.
 */
export const INLINE_MAX_BYTES = 64 << 10;

/** @internal What the JS thread sends the body thread. */
export interface BodyRequestMessage {
  id: number;
  segments: Uint8Array<ArrayBuffer>[];
  maxImageBytes: number;
}

/** @internal What the body thread answers. */
export type BodyReplyMessage =
  | { id: number; request: ChatRequest; images: Array<[string, { bytes: Uint8Array; hash: string } | { error: string }]> }
  | { id: number; httpError: { status: number; message: string; type: string; code: string | null; param: string | null; headers: Record<string, string> } }
  | { id: number; failure: string };

/** A checked chat request, with what its image URLs hold. */
export class ParsedChatBody {
  readonly request: ChatRequest;
  readonly #images: Map<string, DecodedImage>;

  constructor(decoded: DecodedRequest) {
    this.request = decoded.request;
    this.#images = decoded.images;
  }

  /**
   * The bytes and hash of one of `request`'s image URLs: a data URL's from the parse, a remote
   * one's fetched now (readImageUrl), with the same errors readImageUrl gives.
   */
  async readImage(url: string, policy: RemoteImagePolicy, signal?: AbortSignal): Promise<HashedImage> {
    const decoded = this.#images.get(url);
    if (decoded && 'error' in decoded) throw new InvalidArgumentError(decoded.error);
    if (decoded) return decoded;
    const bytes = await readImageUrl(url, policy, signal);
    return { bytes, hash: await imageHash(bytes) };
  }
}

/** Options of {@link BodyParser}; tests change them. */
export interface BodyParserOptions {
  /** Bodies up to this many bytes are parsed inline. Defaults to {@link INLINE_MAX_BYTES}. */
  inlineMaxBytes?: number;
  /**
   * The thread's script. Defaults to body-worker.js next to this file. No `resourceLimits`: on
   * node 20 a worker that reaches them can take the whole process down as it is torn down.
   */
  workerUrl?: URL;
}

interface Pending {
  resolve(body: ParsedChatBody): void;
  reject(err: Error): void;
}

/** One thread and the requests sent to it: a thread that dies fails its own requests only. */
interface BodyThread {
  worker: Worker;
  pending: Map<number, Pending>;
}

const defaultWorkerUrl = new URL('./body-worker.js', import.meta.url);

/**
 * Parses chat request bodies, large ones on a thread started at the first of them. A thread that
 * dies (a bug, say) fails its requests with a 503 and `Retry-After`,
 * and the next body starts another.
 */
export class BodyParser {
  readonly #inlineMaxBytes: number;
  readonly #workerUrl: URL;
  #thread: BodyThread | undefined;
  #nextId = 0;
  #closed = false;

  constructor(options: BodyParserOptions = {}) {
    this.#inlineMaxBytes = options.inlineMaxBytes ?? INLINE_MAX_BYTES;
    this.#workerUrl = options.workerUrl ?? defaultWorkerUrl;
  }

  /**
   * The checked request of a body. The segments' buffers are handed over: a body parsed on the
   * thread leaves them detached.
   * @param maxImageBytes Largest decoded data URL image.
   * @throws HttpError 400 `invalid_json` and parseChatRequest's 400s; 503 when the thread died
   *   meanwhile; DisposedError after `close()`.
   */
  async parse(body: BodyBytes, maxImageBytes: number): Promise<ParsedChatBody> {
    if (this.#closed) throw new DisposedError('This body parser');
    if (body.size <= this.#inlineMaxBytes) {
      const bytes = body.segments.length === 1 ? body.segments[0]! : Buffer.concat(body.segments);
      return new ParsedChatBody(decodeChatBody(bytes, maxImageBytes));
    }
    const thread = (this.#thread ??= this.#start());
    const id = this.#nextId++;
    return new Promise<ParsedChatBody>((resolve, reject) => {
      thread.pending.set(id, { resolve, reject });
      // Held only while it has work: an idle parser keeps no process alive.
      if (thread.pending.size === 1) thread.worker.ref();
      const message: BodyRequestMessage = { id, segments: body.segments, maxImageBytes };
      try {
        thread.worker.postMessage(message, [...new Set(body.segments.map((s) => s.buffer))]);
      } catch (err) {
        thread.pending.delete(id);
        if (thread.pending.size === 0) thread.worker.unref();
        reject(err as Error);
      }
    });
  }

  /** Ends the thread; bodies being parsed fail with a 503. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    const thread = this.#thread;
    this.#thread = undefined;
    await thread?.worker.terminate();
  }

  #start(): BodyThread {
    // Flags meant for the application's entry (--input-type, loaders, profilers) have no business here.
    const worker = new Worker(this.#workerUrl, { execArgv: [] });
    worker.unref();
    const thread: BodyThread = { worker, pending: new Map() };
    worker.on('message', (reply: BodyReplyMessage) => {
      const pending = thread.pending.get(reply.id);
      thread.pending.delete(reply.id);
      if (thread.pending.size === 0) worker.unref();
      if (!pending) return;
      if ('request' in reply) {
        const images = new Map<string, DecodedImage>();
        for (const [key, image] of reply.images) {
          images.set(key, 'error' in image ? image : { bytes: Buffer.from(image.bytes.buffer, image.bytes.byteOffset, image.bytes.byteLength), hash: image.hash });
        }
        pending.resolve(new ParsedChatBody({ request: reply.request, images }));
      } else if ('httpError' in reply) {
        const e = reply.httpError;
        pending.reject(new HttpError(e.status, e.message, e.type, e.code, e.param, e.headers));
      } else {
        // Not a rule of the request: a 500 that hides the details, as toHttpError does.
        pending.reject(new Error(reply.failure));
      }
    });
    const lost = () => {
      if (this.#thread === thread) this.#thread = undefined;
      const err = this.#closed
        ? new HttpError(503, 'The server is shutting down', 'server_error', 'server_closing')
        : new HttpError(503, 'The thread that reads request bodies stopped while reading this one; send the request again', 'server_error', 'body_reader_failed', null, { 'retry-after': '1' });
      for (const { reject } of thread.pending.values()) reject(err);
      thread.pending.clear();
    };
    worker.on('error', lost);
    worker.on('exit', lost);
    return thread;
  }
}
