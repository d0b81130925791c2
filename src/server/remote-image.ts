/**
 * Fetches a remote image for the server without becoming an SSRF hole: every hop's host is
 * resolved here, all its addresses are checked, and the connection goes to the address that
 * was checked (no second DNS lookup a rebinding resolver could answer differently).
 * @module
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { AbortedError, InvalidArgumentError, MinigptError } from '../errors.js';
import { isForbiddenAddress } from './forbidden-address.js';
import type { RemoteImagePolicy } from './images.js';

/** @internal How hosts are resolved and addresses judged; tests replace it. */
export interface ImageNet {
  lookup(host: string): Promise<Array<{ address: string; family: number }>>;
  isForbidden(ip: string): boolean;
}

/** @internal */
export const defaultImageNet: ImageNet = {
  lookup: (host) => dnsLookup(host, { all: true, verbatim: true }),
  isForbidden: isForbiddenAddress,
};

const MAX_REDIRECTS = 3;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

// What messages show of a URL: no credentials, query or fragment (they may hold tokens).
function showUrl(u: URL): string {
  return `${u.protocol}//${u.host}${u.pathname}`;
}

const mib = (n: number) => `${(n / (1024 * 1024)).toFixed(1)} MiB`;

type Hop = { redirect: URL } | { body: Buffer };

/** @internal Fetches `url` under `policy`; see readImageUrl. */
export async function fetchRemoteImage(url: URL, policy: RemoteImagePolicy, signal: AbortSignal | undefined, net: ImageNet): Promise<Buffer> {
  let current = url;
  const fail = (reason: string, cause?: unknown) =>
    new InvalidArgumentError(`Could not fetch the image at ${showUrl(url)}${current === url ? '' : ` (redirected to ${showUrl(current)})`}: ${reason}`, { cause });

  if (signal?.aborted) throw new AbortedError('The image download was aborted', { cause: signal.reason });
  // One controller for the whole fetch: the time limit and the caller's signal both end it.
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(fail(`no complete answer within ${policy.timeoutMs} ms; use a faster host or send the image as a data: URL`)), policy.timeoutMs);
  const onAbort = () => stop.abort(new AbortedError('The image download was aborted', { cause: signal?.reason }));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (let redirects = 0; ; redirects++) {
      const hop = await fetchHop(current, policy, stop.signal, net, fail);
      if ('body' in hop) return hop.body;
      if (redirects === MAX_REDIRECTS) throw fail(`more than ${MAX_REDIRECTS} redirects`);
      current = hop.redirect;
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

type Fail = (reason: string, cause?: unknown) => InvalidArgumentError;

async function fetchHop(target: URL, policy: RemoteImagePolicy, stop: AbortSignal, net: ImageNet, fail: Fail): Promise<Hop> {
  if (target.protocol !== 'http:' && target.protocol !== 'https:') throw fail(`the scheme ${target.protocol} is not allowed; only http: and https: are`);
  // Credentials in the URL would be sent as an Authorization header; this server sends none.
  if (target.username || target.password) throw fail('URLs with a user name or password are refused; use a URL that needs no credentials');
  const host = target.hostname.startsWith('[') ? target.hostname.slice(1, -1) : target.hostname;
  const family = isIP(host);
  let addresses: Array<{ address: string; family: number }>;
  if (family) addresses = [{ address: host, family }];
  else {
    try {
      addresses = await untilStopped(net.lookup(host), stop);
    } catch (err) {
      if (stop.aborted) throw stop.reason;
      throw fail(`the host name ${host} does not resolve (${(err as NodeJS.ErrnoException).code ?? String(err)})`, err);
    }
    if (addresses.length === 0) throw fail(`the host name ${host} has no addresses`);
  }
  if (!policy.allowPrivate) {
    // Every address, not just the one we would use: a resolver answering both a public and an
    // internal address is refused rather than trusted with the choice.
    const bad = addresses.find((a) => net.isForbidden(a.address));
    if (bad) throw fail(`${bad.address} is a loopback, private, link-local or other internal address, which this server does not fetch from (start it with --allow-private-images to allow that, e.g. for a server on your own network)`);
  }
  return request(target, host, addresses[0], policy.maxBytes, stop, fail);
}

function untilStopped<T>(work: Promise<T>, stop: AbortSignal): Promise<T> {
  if (stop.aborted) return Promise.reject(stop.reason);
  return new Promise<T>((resolve, reject) => {
    const onStop = () => reject(stop.reason);
    stop.addEventListener('abort', onStop, { once: true });
    work.then(resolve, reject).finally(() => stop.removeEventListener('abort', onStop));
  });
}

function request(target: URL, host: string, pinned: { address: string; family: number }, maxBytes: number, stop: AbortSignal, fail: Fail): Promise<Hop> {
  // net.connect asks with { all: true } when it races address families, else for one address.
  const lookup: LookupFunction = (_name, options, callback) => {
    if (options.all) (callback as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [pinned]);
    else callback(null, pinned.address, pinned.family);
  };
  const options: RequestOptions & { servername?: string } = {
    protocol: target.protocol,
    hostname: host,
    port: target.port || undefined,
    path: `${target.pathname}${target.search}`,
    method: 'GET',
    // No cookies, no Authorization: only what a plain image request needs.
    headers: { accept: 'image/*,*/*;q=0.5', 'accept-encoding': 'identity', 'user-agent': 'minigpt-node' },
    agent: false, // a pooled socket could be one connected to an address checked under another policy
    lookup,
  };
  if (target.protocol === 'https:' && !isIP(host)) options.servername = host;
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;

  return new Promise<Hop>((resolve, reject) => {
    let settled = false;
    const done = (err: unknown, hop?: Hop) => {
      if (settled) return;
      settled = true;
      stop.removeEventListener('abort', onStop);
      if (err) {
        req.destroy();
        reject(err);
      } else resolve(hop!);
    };
    const onStop = () => done(stop.reason);
    if (stop.aborted) return reject(stop.reason);
    const req = send(options, (res) => onResponse(res));
    stop.addEventListener('abort', onStop, { once: true });
    req.on('error', (err: NodeJS.ErrnoException) => done(stop.aborted ? stop.reason : fail(`the connection failed (${err.code ?? err.message})`, err)));
    req.end();

    function onResponse(res: IncomingMessage): void {
      const status = res.statusCode ?? 0;
      if (REDIRECTS.has(status) && res.headers.location !== undefined) {
        res.resume();
        let next: URL;
        try {
          next = new URL(res.headers.location, target);
        } catch (err) {
          return done(fail(`HTTP ${status} redirects to an invalid URL`, err));
        }
        return done(null, { redirect: next });
      }
      if (status < 200 || status > 299) return done(fail(`the server answered HTTP ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}`));
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxBytes) return done(fail(`the image is ${mib(declared)}, over this server's limit of ${mib(maxBytes)}`));
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) return done(fail(`the image is over this server's limit of ${mib(maxBytes)}`));
        chunks.push(chunk);
      });
      res.on('error', (err) => done(stop.aborted ? stop.reason : err instanceof MinigptError ? err : fail(`the download broke off (${(err as NodeJS.ErrnoException).code ?? err.message})`, err)));
      res.on('close', () => {
        if (!res.complete) done(stop.aborted ? stop.reason : fail('the connection closed before the whole image arrived'));
      });
      res.on('end', () => done(null, { body: Buffer.concat(chunks, size) }));
    }
  });
}
