/**
 * The bytes behind an OpenAI `image_url.url`: `data:` URLs always, `http(s)` URLs when the
 * operator allows them (with the SSRF guard of remote-image.ts). The bytes are not decoded
 * here: `Model.encodeImage` decodes them and throws `ERR_IMAGE_DECODE` itself.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { defaultImageNet, fetchRemoteImage, type ImageNet } from './remote-image.js';

export { isForbiddenAddress } from './forbidden-address.js';
export { EmbeddingCache, imageHash, type EmbeddingLease, type EmbeddingCacheStats, type HashedImage } from './embedding-cache.js';

/** What {@link readImageUrl} may fetch. */
export interface RemoteImagePolicy {
  /** Fetch `http:` / `https:` image URLs at all (`--allow-remote-images`). */
  allowRemote: boolean;
  /** Let remote fetches reach loopback, private, link-local and other internal addresses. */
  allowPrivate: boolean;
  /** Largest image, in bytes (decoded, for data URLs). */
  maxBytes: number;
  /** Time limit for one whole remote fetch, redirects included, in milliseconds. */
  timeoutMs: number;
}

/** No remote images; when allowed, public addresses only, 20 MiB and 10 s at most. */
export const DEFAULT_IMAGE_POLICY: Readonly<RemoteImagePolicy> = Object.freeze({
  allowRemote: false,
  allowPrivate: false,
  maxBytes: 20 * 1024 * 1024,
  timeoutMs: 10_000,
});

/**
 * Reads the image bytes an OpenAI `image_url.url` names.
 * @param url A `data:` URL (base64 or percent-encoded), or an `http:` / `https:` URL when
 *   `policy.allowRemote` is true.
 * @param policy Limits; see {@link DEFAULT_IMAGE_POLICY}.
 * @param signal Stops a remote fetch.
 * @throws InvalidArgumentError (`ERR_INVALID_ARGUMENT`) for a malformed or too large data
 *   URL, a refused scheme or address, a timeout, a non-2xx answer or a failed connection;
 *   AbortedError (`ERR_ABORTED`) when `signal` aborts.
 */
export function readImageUrl(url: string, policy: RemoteImagePolicy, signal?: AbortSignal): Promise<Buffer> {
  return readImageUrlWith(url, policy, signal, defaultImageNet);
}

/** @internal readImageUrl with the resolver and address check replaced (tests). */
export async function readImageUrlWith(url: string, policy: RemoteImagePolicy, signal: AbortSignal | undefined, net: ImageNet): Promise<Buffer> {
  if (typeof url !== 'string' || url.length === 0) throw new InvalidArgumentError('Expected a non-empty string for image_url.url');
  checkPolicy(policy);
  if (/^data:/i.test(url)) return readDataUrl(url, policy.maxBytes);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidArgumentError(`image_url.url is not a valid URL (${shorten(url)}); send a data: URL (data:image/png;base64,...) or an http(s) URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new InvalidArgumentError(`image_url.url has the unsupported scheme ${parsed.protocol} ; send a data: URL (data:image/png;base64,...)${policy.allowRemote ? ' or an http(s) URL' : ''}`);
  }
  if (!policy.allowRemote) {
    throw new InvalidArgumentError(`Remote image URLs are off on this server (${parsed.protocol}//${parsed.host}${parsed.pathname}); send the image as a data: URL (data:image/png;base64,...), or start the server with --allow-remote-images`);
  }
  return fetchRemoteImage(parsed, policy, signal, net);
}

function checkPolicy(p: RemoteImagePolicy): void {
  const ok =
    p !== null &&
    typeof p === 'object' &&
    typeof p.allowRemote === 'boolean' &&
    typeof p.allowPrivate === 'boolean' &&
    Number.isSafeInteger(p.maxBytes) &&
    p.maxBytes > 0 &&
    Number.isFinite(p.timeoutMs) &&
    p.timeoutMs > 0;
  if (!ok) throw new InvalidArgumentError('Expected a RemoteImagePolicy { allowRemote: boolean, allowPrivate: boolean, maxBytes: positive integer, timeoutMs: positive number }');
}

// A data URL can be megabytes; messages quote only its start.
function shorten(url: string): string {
  const head = url.slice(0, 40);
  return url.length > head.length ? `${head}...` : head;
}

const mib = (n: number) => `${(n / (1024 * 1024)).toFixed(1)} MiB`;

function readDataUrl(url: string, maxBytes: number): Buffer {
  const comma = url.indexOf(',');
  if (comma < 0) throw new InvalidArgumentError(`Malformed data URL (${shorten(url)}): no comma before the data; expected data:<media type>;base64,<data>`);
  const meta = url.slice(5, comma).split(';').map((s) => s.trim());
  const base64 = meta.length > 1 && meta[meta.length - 1].toLowerCase() === 'base64';
  const mediaType = meta[0];
  if (mediaType !== '' && !/^[\w.+-]+\/[\w.+-]+$/.test(mediaType)) {
    throw new InvalidArgumentError(`Malformed data URL: "${mediaType.slice(0, 40)}" is not a media type; expected data:image/png;base64,<data>`);
  }
  const bytes = base64 ? decodeBase64(url, comma + 1, maxBytes) : percentDecode(url, comma + 1, maxBytes);
  if (bytes.length === 0) throw new InvalidArgumentError('The data URL holds no image data; put the base64 image after the comma (data:image/png;base64,<data>)');
  return bytes;
}

function tooBig(size: number, maxBytes: number): InvalidArgumentError {
  return new InvalidArgumentError(`The image in the data URL is ${mib(size)}, over this server's limit of ${mib(maxBytes)}; send a smaller image`);
}

function decodeBase64(url: string, start: number, maxBytes: number): Buffer {
  let text = url.slice(start);
  // Percent-escaped base64 (%2B, %2F, %3D) is still base64 to a browser; whitespace is skipped.
  if (text.includes('%')) text = percentDecode(url, start, Infinity).toString('latin1');
  if (/[\t\n\f\r ]/.test(text)) text = text.replace(/[\t\n\f\r ]+/g, '');
  const bad = /[^A-Za-z0-9+/\-_=]/.exec(text);
  const padAt = text.indexOf('=');
  const badPad = padAt >= 0 && (padAt < text.length - 2 || !/^={1,2}$/.test(text.slice(padAt)) || text.length % 4 !== 0);
  if (bad || badPad || text.length % 4 === 1) {
    const why = bad ? `the character ${JSON.stringify(bad[0])} at data position ${bad.index} is not base64` : 'its length or "=" padding is wrong';
    throw new InvalidArgumentError(`Malformed base64 in the data URL: ${why}; send the image as standard base64 (data:image/png;base64,<data>)`);
  }
  const unpadded = padAt >= 0 ? padAt : text.length;
  const size = Math.floor((unpadded * 3) / 4);
  if (size > maxBytes) throw tooBig(size, maxBytes);
  return Buffer.from(text, 'base64'); // node's decoder reads the URL-safe alphabet too
}

const hex = (c: number) => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1);

// Byte-wise: %FF is the byte 0xff, not a UTF-8 sequence (decodeURIComponent would throw on it).
function percentDecode(url: string, start: number, maxBytes: number): Buffer {
  const raw = Buffer.from(url.slice(start), 'utf8');
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    let b = raw[i];
    if (b === 37) {
      const hi = hex(raw[i + 1] ?? 0);
      const lo = hex(raw[i + 2] ?? 0);
      if (hi < 0 || lo < 0) {
        throw new InvalidArgumentError(`Malformed data URL: "%" at data position ${i} does not start a %XX escape; write "%" as %25, or send the image as base64 (data:image/png;base64,<data>)`);
      }
      b = hi * 16 + lo;
      i += 2;
    }
    out[n++] = b;
  }
  if (n > maxBytes) throw tooBig(n, maxBytes);
  return out.subarray(0, n);
}
