/**
 * HTTP through node's fetch (undici), with the redirects followed here so that the token goes
 * only to the endpoint's own origin, never to the host a redirect leads to (the hub sends file
 * downloads to a CDN), and so that no redirect downgrades https to http.
 * @module
 */
import { AbortedError, DownloadError } from '../errors.js';
import { checkTransport } from './spec.js';

export interface HttpContext {
  /** The hub (or mirror): the only origin the token is sent to. */
  endpoint: URL;
  token?: string;
  signal?: AbortSignal;
}

export interface Hop { url: URL; status: number; headers: Headers }

/** A URL fit for an error message: the query of a signed CDN URL is a credential. */
export function redact(url: URL): string {
  return url.search ? `${url.origin}${url.pathname}?…` : url.href;
}

const userAgent = `minigpt-node (node ${process.versions.node})`;

/**
 * Sends `method` to `url`, following up to 10 redirects while `follow(hop)` says so. Returns
 * the last response and every hop before it (the hub's answers carry the file's hash and size
 * on the redirect itself).
 */
export async function request(
  ctx: HttpContext,
  url: URL,
  init: { method: 'GET' | 'HEAD'; headers?: Record<string, string>; signal?: AbortSignal; follow?: (hop: Hop) => boolean },
): Promise<{ response: Response; url: URL; hops: Hop[] }> {
  const hops: Hop[] = [];
  let current = url;
  for (let i = 0; ; i++) {
    const headers: Record<string, string> = { 'user-agent': userAgent, ...init.headers };
    if (ctx.token && current.origin === ctx.endpoint.origin) headers.authorization = `Bearer ${ctx.token}`;
    let response: Response;
    try {
      response = await fetch(current, { method: init.method, headers, redirect: 'manual', signal: init.signal ?? ctx.signal });
    } catch (err) {
      throw networkError(err, current, init.signal ?? ctx.signal);
    }
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || response.status === 304 || !location) return { response, url: current, hops };
    const hop = { url: current, status: response.status, headers: response.headers };
    hops.push(hop);
    await response.body?.cancel().catch(() => {});
    if (init.follow && !init.follow(hop)) return { response, url: current, hops: hops.slice(0, -1) };
    if (i >= 10) throw new DownloadError(`Too many redirects from ${redact(url)}`, { url: redact(url) });
    const next = new URL(location, current);
    try {
      checkTransport(next, 'Redirect to');
    } catch (err) {
      throw new DownloadError(`${redact(current)} redirects to ${redact(next)}, which is refused: ${(err as Error).message}`, { url: redact(current), cause: err });
    }
    current = next;
  }
}

const retryableCodes = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'ENOTFOUND',
  'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
]);

/** A failure of the connection rather than an answer: worth another try. */
export class NetworkError extends DownloadError {
  readonly errno?: string;
  constructor(message: string, options: { cause?: unknown; url?: string; errno?: string }) {
    super(message, options);
    this.errno = options.errno;
  }
}

function errnoOf(err: unknown): string | undefined {
  for (let e: any = err, depth = 0; e && depth < 5; e = e.cause, depth++) {
    if (typeof e.code === 'string' && (retryableCodes.has(e.code) || e.code.startsWith('UND_ERR'))) return e.code;
  }
  return undefined;
}

/** Maps what fetch or a body stream threw to AbortedError, NetworkError (retry) or itself. */
export function networkError(err: unknown, url: URL, signal: AbortSignal | undefined): Error {
  if (signal?.aborted) return new AbortedError('Download aborted', { cause: signal.reason });
  if (err instanceof DownloadError || err instanceof AbortedError) return err;
  const errno = errnoOf(err);
  // undici reports a body cut short as TypeError('terminated') with the socket error as cause.
  if (errno || (err instanceof TypeError && /fetch failed|terminated/.test(err.message))) {
    const detail = errno ?? (err as Error).message;
    return new NetworkError(
      `Cannot download from ${url.host}: ${detail}. Check the connection (and HF_ENDPOINT), or set MINIGPT_OFFLINE=1 to use only cached models`,
      { cause: err, url: redact(url), errno },
    );
  }
  return err as Error;
}

/** What the hub says about a failed request, for the message. */
export interface FailureContext { repo?: string; file?: string; revision?: string; endpoint: URL; tokenSent: boolean }

/** The error for an HTTP status that will not get better by retrying, with what to do. */
export function statusError(status: number, url: URL, headers: Headers, ctx: FailureContext | undefined): DownloadError {
  const where = redact(url);
  const hubCode = headers.get('x-error-code') ?? '';
  const hubMessage = headers.get('x-error-message');
  const page = ctx?.repo ? new URL(ctx.repo, ctx.endpoint.href.endsWith('/') ? ctx.endpoint : new URL(ctx.endpoint.href + '/')).href : undefined;
  let message: string;
  if (status === 401 || status === 403) {
    const subject = ctx?.repo ? `the repo ${ctx.repo}` : where;
    message = ctx?.tokenSent
      ? `HTTP ${status} for ${where}: the token in HF_TOKEN (or the Hugging Face token file) was refused for ${subject}. Check that it has read access${page ? ` and that you accepted the licence at ${page}` : ''}`
      : `HTTP ${status} for ${where}: ${subject} is gated, private or does not exist. ${page ? `Accept its licence at ${page}, then ` : ''}set HF_TOKEN to a Hugging Face access token (or run \`hf auth login\`)`;
  } else if (status === 404) {
    message = ctx?.repo
      ? hubCode === 'RepoNotFound'
        ? `HTTP 404 for ${where}: there is no repo ${ctx.repo} on ${ctx.endpoint.host}; check the owner and repo name`
        : hubCode === 'RevisionNotFound'
          ? `HTTP 404 for ${where}: repo ${ctx.repo} has no revision ${ctx.revision}; check the branch, tag or commit after '#'`
          : `HTTP 404 for ${where}: ${ctx.file ? `file ${ctx.file} is not in repo ${ctx.repo}` : `repo ${ctx.repo} was not found`} at revision ${ctx.revision ?? 'main'}; see the files at ${page}/tree/${encodeURIComponent(ctx.revision ?? 'main')}`
      : `HTTP 404 for ${where}: no such file; check the URL`;
  } else if (status === 429) {
    message = `HTTP 429 for ${where}: too many requests; wait a while and try again${ctx?.tokenSent ? '' : ' (a token in HF_TOKEN raises the limit)'}`;
  } else if (status >= 500) {
    message = `HTTP ${status} for ${where}: the server failed; try again later`;
  } else {
    message = `HTTP ${status} for ${where}: unexpected answer`;
  }
  if (hubMessage) message += ` (server says: ${hubMessage})`;
  return new DownloadError(message, { status, url: where });
}

/** 408, 429 and 5xx: the next try may work. */
export function retryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}
