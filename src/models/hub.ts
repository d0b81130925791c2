/**
 * The few Hugging Face hub requests we make: HEAD of a file's resolve URL (size, LFS sha256,
 * commit) and the repo's file listing (tree API), as huggingface_hub and llama.cpp make them.
 * @module
 */
import { DownloadError } from '../errors.js';
import { request, statusError, type HttpContext, type Hop } from './http.js';
import { isCommit } from './spec.js';

export interface HubFile { path: string; size?: number; sha256?: string }
export interface RemoteInfo { size?: number; sha256?: string; etag?: string; commit?: string }

function base(endpoint: URL): string {
  return endpoint.href.replace(/\/+$/, '');
}

const encodePath = (file: string): string => file.split('/').map(encodeURIComponent).join('/');

/** `<endpoint>/<repo>/resolve/<revision>/<file>`: the URL the hub serves a file at. */
export function resolveUrl(endpoint: URL, repo: string, revision: string, file: string): URL {
  return new URL(`${base(endpoint)}/${repo}/resolve/${encodeURIComponent(revision)}/${encodePath(file)}`);
}

function unquote(etag: string | null): string | undefined {
  if (!etag) return undefined;
  return etag.replace(/^W\//, '').replace(/^"|"$/g, '');
}

function num(value: string | null): number | undefined {
  if (value === null || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}

/**
 * HEAD of a file. The hub answers an LFS file with a redirect to its CDN that carries
 * X-Linked-Etag (the sha256) and X-Linked-Size: we stop there, as huggingface_hub does, and
 * follow only redirects within the same origin (a renamed repo). Other servers are followed
 * to the end for Content-Length and ETag.
 */
export async function headFile(ctx: HttpContext, url: URL, failure: Parameters<typeof statusError>[3]): Promise<RemoteInfo> {
  const follow = (hop: Hop) => hop.url.origin === new URL(hop.headers.get('location')!, hop.url).origin || !hop.headers.has('x-linked-size');
  const { response, hops } = await request(ctx, url, { method: 'HEAD', headers: { 'accept-encoding': 'identity' }, follow });
  const all = [...hops.map((h) => h.headers), response.headers];
  const first = (name: string) => all.map((h) => h.get(name)).find((v) => v !== null) ?? null;
  if (response.status >= 400) {
    throw statusError(response.status, new URL(response.url || url.href), response.headers, failure);
  }
  const linked = unquote(first('x-linked-etag'));
  const etag = unquote(response.headers.get('etag')) ?? unquote(first('etag'));
  const sha256 = [linked, etag].find((v) => v !== undefined && /^[0-9a-f]{64}$/.test(v));
  const size = num(first('x-linked-size')) ?? (response.status < 300 ? num(response.headers.get('content-length')) : undefined);
  const commit = first('x-repo-commit') ?? undefined;
  return { size, sha256, etag: linked ?? etag, commit: commit && isCommit(commit) ? commit : undefined };
}

interface TreeItem { type?: unknown; path?: unknown; size?: unknown; oid?: unknown; lfs?: { oid?: unknown; size?: unknown } }

/** Every file of the repo at `revision` (tree API, recursive, following its pages). */
export async function listRepo(ctx: HttpContext, repo: string, revision: string, failure: Parameters<typeof statusError>[3]): Promise<HubFile[]> {
  let next: URL | undefined = new URL(`${base(ctx.endpoint)}/api/models/${repo}/tree/${encodeURIComponent(revision)}?recursive=true`);
  const files: HubFile[] = [];
  for (let page = 0; next && page < 1000; page++) {
    const { response } = await request(ctx, next, { method: 'GET', headers: { accept: 'application/json' } });
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => {});
      throw statusError(response.status, next, response.headers, failure);
    }
    const items = (await response.json()) as unknown;
    if (!Array.isArray(items)) throw new DownloadError(`The file listing of ${repo} from ${next.host} is not a JSON array`, { url: next.href });
    for (const item of items as TreeItem[]) {
      if (item?.type !== 'file' || typeof item.path !== 'string') continue;
      const lfsOid = typeof item.lfs?.oid === 'string' ? item.lfs.oid.replace(/^sha256:/, '') : undefined;
      const size = typeof item.lfs?.size === 'number' ? item.lfs.size : typeof item.size === 'number' ? item.size : undefined;
      files.push({ path: item.path, size, sha256: lfsOid && /^[0-9a-f]{64}$/.test(lfsOid) ? lfsOid : undefined });
    }
    const link = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get('link') ?? '');
    next = link ? new URL(link[1]!, next) : undefined;
  }
  return files;
}
