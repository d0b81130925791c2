/**
 * The bytes behind an OpenAI `image_url.url`: `data:` URLs always, `http(s)` URLs when the
 * operator allows them (with the SSRF guard of remote-image.ts). The bytes are not decoded
 * here: `Model.encodeImage` decodes them and throws `ERR_IMAGE_DECODE` itself.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { readDataUrl, shortenUrl } from './body-data-url.js';
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
    throw new InvalidArgumentError(`image_url.url is not a valid URL (${shortenUrl(url)}); send a data: URL (data:image/png;base64,...) or an http(s) URL`);
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
