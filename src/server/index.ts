/**
 * An OpenAI-compatible HTTP server over a loaded model: `POST /v1/chat/completions` (text and
 * images, streamed or whole), `GET /v1/models`, `GET /health`, `GET /metrics` and a page to try
 * it at `/`. Built on node:http (docs/serving.md says why); `handler` mounts in any node:http
 * server or framework.
 * @module
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import { DisposedError, InvalidArgumentError } from '../errors.js';
import type { Model } from '../model.js';
import { checkKeys, optBoolean, optInteger, optString, optThreads } from '../validate.js';
import { BodyParser } from './body-parser.js';
import { handleChat } from './chat.js';
import { checkApiKey, sendError, sendJson } from './http-io.js';
import { DEFAULT_IMAGE_POLICY, EmbeddingCache, type RemoteImagePolicy } from './images.js';
import { ServerMetrics } from './metrics.js';
import { HttpError, toHttpError } from './openai.js';
import { chatPage } from './page.js';
import { SlotPool } from './slots.js';

/** Options of {@link createServer}. */
export interface ServerOptions {
  /** Requests answered at once, each on a session of its own. Defaults to the model's `parallelSessions`. */
  parallel?: number;
  /** Requests that may wait for a free session; more get a 503 with `Retry-After`. Defaults to 64. */
  queue?: number;
  /** Context size of each session, in tokens. Defaults to loadModel's `contextSize`, else the model's (at most 4096). */
  contextSize?: number;
  /** CPU threads per session. Defaults to loadModel's `threads`. */
  threads?: number;
  /** When set, every request but `GET /health` and the page must carry `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Largest request body in bytes (images come inside it). Defaults to 20 MiB. */
  maxBody?: number;
  /** Fetch `http(s)` image URLs (never by default: a server fetching URLs its clients name is an SSRF risk). */
  allowRemoteImages?: boolean;
  /** With `allowRemoteImages`, also fetch from loopback and private addresses. Defaults to false. */
  allowPrivateImages?: boolean;
  /** Distinct images whose embeddings are kept for reuse. Defaults to 32. */
  imageCache?: number;
  /** Serve the page to try the model at `/`. Defaults to true. */
  ui?: boolean;
  /** The model's name in `/v1/models` and answers. Defaults to the model file's name. */
  modelName?: string;
}

const serverKeys = ['parallel', 'queue', 'contextSize', 'threads', 'apiKey', 'maxBody', 'allowRemoteImages', 'allowPrivateImages', 'imageCache', 'ui', 'modelName'] as const;

/** What {@link MinigptServer.close} does with requests still running. */
export interface CloseOptions {
  /** How long running answers may take to finish before they are cut, in ms. Defaults to 10 s. */
  timeoutMs?: number;
}

type Ready = { model: Model; slots: SlotPool; images: EmbeddingCache | undefined; modelName: string };

/**
 * The server of {@link createServer}: `listen()` on a port, or mount `handler` yourself.
 * `close()` stops accepting, lets running answers finish (up to a timeout) and frees the
 * sessions; the model stays the caller's.
 */
export class MinigptServer {
  /** A node:http request listener: `http.createServer(server.handler)`, or a framework's raw route. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void;
  #options: Required<Omit<ServerOptions, 'apiKey' | 'modelName' | 'parallel' | 'contextSize' | 'threads'>> & Pick<ServerOptions, 'apiKey' | 'modelName' | 'parallel' | 'contextSize' | 'threads'>;
  #metrics = new ServerMetrics();
  #ready: Ready | undefined;
  #loadError: Error | undefined;
  #loading: Promise<void>;
  #http: Server | undefined;
  #running = new Set<Promise<void>>();
  #cancels = new Set<AbortController>();
  #closing: Promise<void> | undefined;
  #imagePolicy: RemoteImagePolicy;
  // Its thread starts with the first large body and ends with close().
  #bodies = new BodyParser();

  /** @internal */
  constructor(model: Model | Promise<Model>, options: ServerOptions) {
    const o = checkKeys(options, serverKeys, 'createServer options');
    this.#options = {
      parallel: optInteger(o, 'parallel', 1, 256),
      queue: optInteger(o, 'queue', 0, 100_000, 64)!,
      contextSize: optInteger(o, 'contextSize', 16, 1 << 24),
      threads: o.threads === undefined ? undefined : optThreads(o, 'threads', 1),
      apiKey: optString(o, 'apiKey'),
      maxBody: optInteger(o, 'maxBody', 1024, 2 ** 31, 20 << 20)!,
      allowRemoteImages: optBoolean(o, 'allowRemoteImages', false),
      allowPrivateImages: optBoolean(o, 'allowPrivateImages', false),
      imageCache: optInteger(o, 'imageCache', 0, 100_000, 32)!,
      ui: optBoolean(o, 'ui', true),
      modelName: optString(o, 'modelName'),
    };
    this.#imagePolicy = { ...DEFAULT_IMAGE_POLICY, allowRemote: this.#options.allowRemoteImages, allowPrivate: this.#options.allowPrivateImages, maxBytes: this.#options.maxBody };
    if (this.#options.apiKey === '') throw new InvalidArgumentError('apiKey is empty; leave it out for a server without a key, or give a real key');
    this.#loading = Promise.resolve(model).then(
      (m) => {
        this.#ready = this.#prepare(m);
      },
      (err: Error) => {
        this.#loadError = err;
      },
    );
    this.handler = (req, res) => this.#track(this.#handle(req, res));
  }

  #prepare(model: Model): Ready {
    const info = model.info;
    const parallel = this.#options.parallel ?? model.defaults.parallelSessions;
    const slots = new SlotPool(model, parallel, this.#options.queue, { contextSize: this.#options.contextSize, threads: this.#options.threads });
    slots.onChange = (busy, waiting) => {
      this.#metrics.setSlots(busy, slots.size);
      this.#metrics.setQueueDepth(waiting);
    };
    this.#metrics.setSlots(0, slots.size);
    const images = info.hasVision ? new EmbeddingCache(model, this.#options.imageCache) : undefined;
    const modelName = this.#options.modelName ?? basename(info.modelPath).replace(/\.gguf$/i, '');
    return { model, slots, images, modelName };
  }

  /** Resolves when the model is loaded and the server answers requests (rejects if loading failed). */
  async ready(): Promise<void> {
    await this.#loading;
    if (this.#loadError) throw this.#loadError;
  }

  #track(work: Promise<void>): void {
    this.#running.add(work);
    void work.finally(() => this.#running.delete(work));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const path = (req.url ?? '/').split('?')[0]!;
    try {
      await this.#route(req, res, path);
    } catch (err) {
      sendError(res, toHttpError(err));
    } finally {
      const finish = () => this.#metrics.requestFinished(path, res.statusCode, (performance.now() - started) / 1000);
      if (res.writableFinished || res.destroyed) finish();
      else res.once('close', finish);
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    if (path === '/health') {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed('GET');
      if (this.#closing) return sendJson(res, 503, { status: 'closing' });
      if (this.#loadError) return sendJson(res, 500, { status: 'error', error: this.#loadError.message });
      return this.#ready ? sendJson(res, 200, { status: 'ok' }) : sendJson(res, 503, { status: 'loading' }, { 'retry-after': '1' });
    }
    if (path === '/' && this.#options.ui) {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed('GET');
      const page = await chatPage();
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': page.length, 'cache-control': 'no-cache', 'content-security-policy': "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'" });
      res.end(method === 'HEAD' ? undefined : page);
      return;
    }
    checkApiKey(req, this.#options.apiKey);
    if (path === '/metrics') {
      if (method !== 'GET') throw methodNotAllowed('GET');
      const text = await this.#metrics.render();
      res.writeHead(200, { 'content-type': this.#metrics.contentType });
      res.end(text);
      return;
    }
    const known = path === '/v1/chat/completions' || path === '/v1/models' || path.startsWith('/v1/models/');
    if (!known) throw new HttpError(404, `No route ${method} ${path}; this server answers POST /v1/chat/completions, GET /v1/models, GET /health and GET /metrics`, 'invalid_request_error', 'not_found');
    if (this.#closing) throw new HttpError(503, 'The server is shutting down', 'server_error', 'server_closing');
    await this.#loading;
    if (this.#loadError) throw new HttpError(500, `The model failed to load: ${this.#loadError.message}`, 'server_error', 'model_load_failed');
    const ready = this.#ready!;
    if (path === '/v1/chat/completions') {
      if (method !== 'POST') throw methodNotAllowed('POST');
      const cancel = new AbortController();
      this.#cancels.add(cancel);
      // The server closing cuts a running answer as the client leaving would.
      cancel.signal.addEventListener('abort', () => res.destroy(), { once: true });
      try {
        await handleChat(req, res, { slots: ready.slots, images: ready.images, imagePolicy: this.#imagePolicy, metrics: this.#metrics, maxBody: this.#options.maxBody, bodies: this.#bodies, modelName: ready.modelName });
      } finally {
        this.#cancels.delete(cancel);
      }
      return;
    }
    if (method !== 'GET') throw methodNotAllowed('GET');
    const entry = this.#modelEntry(ready);
    if (path === '/v1/models') return sendJson(res, 200, { object: 'list', data: [entry] });
    const id = decodeURIComponent(path.slice('/v1/models/'.length));
    if (id !== entry.id) throw new HttpError(404, `The model '${id}' does not exist; this server has '${entry.id}'`, 'invalid_request_error', 'model_not_found', 'model');
    return sendJson(res, 200, entry);
  }

  #modelEntry(ready: Ready) {
    const info = ready.model.info;
    return {
      id: ready.modelName,
      object: 'model' as const,
      created: 0,
      owned_by: 'minigpt-node',
      // Not in OpenAI's schema: what a client needs to know before sending an image.
      meta: { vision: info.hasVision, modalities: info.hasVision ? ['text', 'image'] : ['text'], context_length: ready.slots.contextSize, parameters: info.parameters, projector: info.projectorType },
    };
  }


  /**
   * Listens on `host:port` (default 127.0.0.1 and 8080; port 0 picks a free one). Binding
   * anywhere but loopback without an `apiKey` prints a warning: anyone who reaches the port can
   * use the model.
   */
  async listen(port = 8080, host = '127.0.0.1'): Promise<AddressInfo> {
    if (this.#http) throw new InvalidArgumentError('This server is already listening; create another one for a second port');
    const http = createHttpServer({ keepAliveTimeout: 5000 }, this.handler);
    this.#http = http;
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(port, host, () => {
        http.off('error', reject);
        resolve();
      });
    });
    const loopback = host === 'localhost' || /^127\./.test(host) || host === '::1';
    if (!loopback && !this.#options.apiKey) {
      process.emitWarning(`minigpt serve is listening on ${host}:${(http.address() as AddressInfo).port} without an API key: anyone who can reach this address can use the model. Set an API key (--api-key or MINIGPT_API_KEY), or bind 127.0.0.1`, { code: 'MINIGPT_OPEN_SERVER' });
    }
    return http.address() as AddressInfo;
  }

  /** The address listened on, once `listen()` has resolved. */
  get address(): AddressInfo | undefined {
    return (this.#http?.address() as AddressInfo | null) ?? undefined;
  }

  /** Stops accepting, waits for running answers up to `timeoutMs`, then cuts them; frees the sessions. Idempotent. */
  close(options: CloseOptions = {}): Promise<void> {
    const o = checkKeys(options, ['timeoutMs'], 'close options');
    const timeoutMs = optInteger(o, 'timeoutMs', 0, 3_600_000, 10_000)!;
    this.#closing ??= (async () => {
      const http = this.#http;
      const stopped = http ? new Promise<void>((resolve) => http.close(() => resolve())) : Promise.resolve();
      http?.closeIdleConnections();
      await this.#loading;
      this.#ready?.slots.close(new HttpError(503, 'The server is shutting down', 'server_error', 'server_closing'));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
      await Promise.race([Promise.allSettled([...this.#running]), timedOut]);
      clearTimeout(timer);
      for (const cancel of this.#cancels) cancel.abort(new DisposedError('This server'));
      await Promise.allSettled([...this.#running]);
      http?.closeAllConnections();
      await stopped;
      await this.#ready?.slots.dispose();
      this.#ready?.images?.dispose();
      await this.#bodies.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function methodNotAllowed(allowed: string): HttpError {
  return new HttpError(405, `Method not allowed here; use ${allowed}`, 'invalid_request_error', 'method_not_allowed', null, { allow: allowed });
}

/**
 * An OpenAI-compatible server over `model` (or a model still loading: `/health` answers 503
 * until it is ready). Call `listen()` to serve on a port, or mount `handler`.
 * @example
 * const server = createServer(await loadModel({ model, projector }), { parallel: 4 });
 * await server.listen(8080);
 */
export function createServer(model: Model | Promise<Model>, options: ServerOptions = {}): MinigptServer {
  return new MinigptServer(model, options);
}
