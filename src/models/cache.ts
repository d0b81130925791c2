/**
 * The cache's layout on disk and the small metadata file beside each complete file.
 *
 *   <cache>/hf/<owner>/<repo>/<revision>/<path/in/repo>   a file of a hub repo
 *   <cache>/hf/<owner>/<repo>/<revision>/.tree.json       the repo's listing, for `:quant` offline
 *   <cache>/url/<sha256 of the URL>/<file name>           a file fetched by URL
 *   <file>.meta.json   uri, url, size, sha256, etag, revision, commit: present only once complete
 *   <file>.part        the download so far;  <file>.part.json  what it was started from
 *   <file>.lock        pid of the process downloading it
 * @module
 */
import { createHash } from 'node:crypto';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** Where the cache is: MINIGPT_MODELS_DIR, else the platform's cache dir. */
export function modelsDir(): string {
  const env = process.env.MINIGPT_MODELS_DIR;
  if (env) return resolve(env);
  if (process.platform === 'win32') return join(process.env.LOCALAPPDATA || join(homedir(), 'AppData', 'Local'), 'minigpt-node');
  if (process.platform === 'darwin') return join(homedir(), 'Library', 'Caches', 'minigpt-node');
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'minigpt-node');
}

/** A revision as one directory name ('refs/pr/1' has slashes). */
function revisionDir(revision: string): string {
  return encodeURIComponent(revision);
}

export function hfRevisionDir(cache: string, repo: string, revision: string): string {
  const [owner, name] = repo.split('/') as [string, string];
  return join(cache, 'hf', owner, name, revisionDir(revision));
}

export function hfFilePath(cache: string, repo: string, revision: string, file: string): string {
  return join(hfRevisionDir(cache, repo, revision), ...file.split('/'));
}

export function hfTreePath(cache: string, repo: string, revision: string): string {
  return join(hfRevisionDir(cache, repo, revision), '.tree.json');
}

export function urlFilePath(cache: string, url: URL): string {
  const key = createHash('sha256').update(url.href).digest('hex');
  let base = url.pathname.split('/').pop() ?? '';
  try {
    base = decodeURIComponent(base);
  } catch {
    // keep the encoded form
  }
  base = base.replace(/[^A-Za-z0-9._-]/g, '_');
  if (base === '' || /^\.+$/.test(base)) base = 'download';
  return join(cache, 'url', key, base);
}

export const metaPath = (file: string): string => `${file}.meta.json`;
export const partPath = (file: string): string => `${file}.part`;
export const partStatePath = (file: string): string => `${file}.part.json`;
export const lockPath = (file: string): string => `${file}.lock`;

/** What is known of a complete, verified file in the cache. */
export interface EntryMeta {
  uri: string;
  url?: string;
  size: number;
  sha256: string;
  etag?: string;
  revision?: string;
  commit?: string;
  downloadedAt: string;
}

export async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** Write then rename: a reader never sees half a file. */
export async function writeJson(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
  await rename(tmp, path);
}

/**
 * The entry at `file` when it is complete and (where known) the expected size and sha256
 * match. The hash was checked when the file was written; it is not recomputed here.
 */
export async function cachedEntry(file: string, expect: { size?: number; sha256?: string } = {}): Promise<EntryMeta | undefined> {
  const meta = await readJson<EntryMeta>(metaPath(file));
  if (!meta || typeof meta.size !== 'number') return undefined;
  const info = await stat(file).catch(() => undefined);
  if (!info?.isFile() || info.size !== meta.size) return undefined;
  if (expect.size !== undefined && expect.size !== meta.size) return undefined;
  if (expect.sha256 !== undefined && expect.sha256 !== meta.sha256) return undefined;
  return meta;
}
