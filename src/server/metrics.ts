import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * The `route` label values. Anything else is counted as `'other'`: a label taken from the
 * raw URL would let any client create a new time series per request (unbounded memory here
 * and in Prometheus).
 */
export const METRIC_ROUTES = ['/v1/chat/completions', '/v1/models', '/v1/models/:id', '/health', '/metrics', '/', 'other'] as const;

/** One of {@link METRIC_ROUTES}. */
export type MetricRoute = (typeof METRIC_ROUTES)[number];

const KNOWN = new Set<string>(METRIC_ROUTES);

/** Token counts of one request; a missing field counts as 0. */
export interface TokenCounts {
  /** Prompt tokens of the request, reused ones included. */
  prompt?: number;
  /** Prompt tokens found already evaluated in the slot's context (prefix reuse). */
  reused?: number;
  /** Tokens generated. */
  completion?: number;
}

// 10 ms .. 60 s: a warm slot with a reused prefix answers in tens of ms; a cold image
// prompt behind a queue can take most of a minute.
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60];
// 1 ms .. 5 s: a small model on a GPU decodes in ~1 ms; a gap of seconds means the slot
// was starved (CPU contention, a slow client holding back the stream).
const TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
// From a /health answer (sub-ms) to a long streamed answer (minutes).
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * Prometheus metrics of one server, served by `GET /metrics`.
 *
 * Each instance owns its own prom-client `Registry` (never the global one), so two servers
 * in one process keep separate numbers. All names start with `minigpt_`.
 *
 * Process metrics (`collectDefaultMetrics`: CPU, heap, event-loop lag, GC) are left out on
 * purpose: they describe the process, not the server, so two servers would each report the
 * same values; and prom-client starts an event-loop delay monitor and a GC observer for
 * them that it never stops, which would outlive a closed server.
 *
 * The recording methods are synchronous and cheap (one map lookup and a few additions), so
 * they can be called per token. They never throw: a value that is not a finite number >= 0
 * is dropped, because a metrics slip must not fail the request being served.
 *
 * @example
 * ```ts
 * const metrics = new ServerMetrics();
 * metrics.setSlots(0, 4);
 * metrics.requestFinished('/v1/chat/completions', 200, 1.25);
 * res.setHeader('content-type', metrics.contentType);
 * res.end(await metrics.render());
 * ```
 */
export class ServerMetrics {
  /** The `Content-Type` of {@link ServerMetrics.render}'s text (Prometheus text format 0.0.4). */
  readonly contentType: string;

  readonly #registry = new Registry();
  readonly #requests: Counter<'route' | 'status'>;
  readonly #duration: Histogram<'route'>;
  readonly #prompt: Counter;
  readonly #reused: Counter;
  readonly #completion: Counter;
  readonly #queue: Gauge;
  readonly #busy: Gauge;
  readonly #total: Gauge;
  readonly #ttft: Histogram;
  readonly #tpot: Histogram;
  readonly #imageHits: Counter;
  readonly #imageMisses: Counter;

  constructor() {
    const registers = [this.#registry];
    this.contentType = this.#registry.contentType;
    this.#requests = new Counter({
      name: 'minigpt_http_requests_total',
      help: 'HTTP requests answered, by route and status code.',
      labelNames: ['route', 'status'] as const,
      registers,
    });
    this.#duration = new Histogram({
      name: 'minigpt_request_duration_seconds',
      help: 'Time from receiving a request to the end of its response, by route.',
      labelNames: ['route'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#prompt = new Counter({ name: 'minigpt_prompt_tokens_total', help: 'Prompt tokens of all requests, reused ones included.', registers });
    this.#reused = new Counter({
      name: 'minigpt_prompt_tokens_reused_total',
      help: 'Prompt tokens already in a slot context (prefix reuse), so not evaluated again.',
      registers,
    });
    this.#completion = new Counter({ name: 'minigpt_completion_tokens_total', help: 'Tokens generated.', registers });
    this.#queue = new Gauge({ name: 'minigpt_queue_depth', help: 'Requests waiting for a free slot.', registers });
    this.#busy = new Gauge({ name: 'minigpt_slots_busy', help: 'Slots serving a request.', registers });
    this.#total = new Gauge({ name: 'minigpt_slots_total', help: 'Slots (parallel sessions) of the server.', registers });
    this.#ttft = new Histogram({
      name: 'minigpt_time_to_first_token_seconds',
      help: 'Time from receiving a chat request to its first generated token, queueing included.',
      buckets: TTFT_BUCKETS,
      registers,
    });
    this.#tpot = new Histogram({
      name: 'minigpt_time_per_output_token_seconds',
      help: 'Gap between consecutive generated tokens of one answer.',
      buckets: TPOT_BUCKETS,
      registers,
    });
    this.#imageHits = new Counter({
      name: 'minigpt_image_cache_hits_total',
      help: 'Images whose embedding was found in the cache (not encoded again).',
      registers,
    });
    this.#imageMisses = new Counter({ name: 'minigpt_image_cache_misses_total', help: 'Images encoded because they were not in the cache.', registers });
  }

  /**
   * Records one answered request.
   * @param route - The request path; a query string is ignored and a path outside
   *   {@link METRIC_ROUTES} is counted as `'other'`.
   * @param status - The HTTP status sent; anything but an integer 100..599 is labelled `'other'`.
   * @param seconds - Time from receiving the request to the end of the response.
   */
  requestFinished(route: string, status: number, seconds: number): void {
    const r = routeLabel(route);
    this.#requests.inc({ route: r, status: Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : 'other' });
    if (ok(seconds)) this.#duration.observe({ route: r }, seconds);
  }

  /** Adds one request's token counts. */
  tokens(counts: TokenCounts): void {
    if (counts === null || typeof counts !== 'object') return;
    if (ok(counts.prompt)) this.#prompt.inc(counts.prompt);
    if (ok(counts.reused)) this.#reused.inc(counts.reused);
    if (ok(counts.completion)) this.#completion.inc(counts.completion);
  }

  /** Sets the number of requests waiting for a slot. */
  setQueueDepth(n: number): void {
    if (ok(n)) this.#queue.set(n);
  }

  /** Sets the number of busy slots and of all slots. */
  setSlots(busy: number, total: number): void {
    if (ok(busy)) this.#busy.set(busy);
    if (ok(total)) this.#total.set(total);
  }

  /** Records the time from receiving a request to its first generated token. */
  firstToken(seconds: number): void {
    if (ok(seconds)) this.#ttft.observe(seconds);
  }

  /** Records the gap between two consecutive generated tokens of one answer. */
  tokenGap(seconds: number): void {
    if (ok(seconds)) this.#tpot.observe(seconds);
  }

  /** Counts one image-embedding cache lookup. */
  imageCache(hit: boolean): void {
    (hit ? this.#imageHits : this.#imageMisses).inc();
  }

  /** All metrics in the Prometheus text exposition format (see {@link ServerMetrics.contentType}). */
  render(): Promise<string> {
    return this.#registry.metrics();
  }
}

function ok(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

function routeLabel(route: string): MetricRoute {
  if (typeof route !== 'string') return 'other';
  const q = route.search(/[?#]/);
  const path = q < 0 ? route : route.slice(0, q);
  if (KNOWN.has(path) && path !== 'other' && path !== '/v1/models/:id') return path as MetricRoute;
  if (path.startsWith('/v1/models/') && path.length > '/v1/models/'.length) return '/v1/models/:id';
  return 'other';
}
