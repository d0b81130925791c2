/**
 * What is in the cache, and removing entries from it.
 * @module
 */
import { readdir, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { metaPath, partPath, partStatePath, readJson, type EntryMeta } from './cache.js';
import { loadCatalog, type CatalogEntry } from './catalog.js';
import { cacheDirOf, cachedListing, planSpec } from './plan.js';

async function* walk(dir: string): AsyncGenerator<string> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) yield* walk(path);
    else if (e.isFile()) yield path;
  }
}

/**
 * The catalog entries, and what is in the cache (complete files only) with sizes.
 */
export async function listModels(options?: { cacheDir?: string }): Promise<{ catalog: CatalogEntry[]; cached: Array<{ uri: string; path: string; size: number }> }> {
  const cache = cacheDirOf(options);
  const cached: Array<{ uri: string; path: string; size: number }> = [];
  for await (const path of walk(cache)) {
    if (!path.endsWith('.meta.json')) continue;
    const file = path.slice(0, -'.meta.json'.length);
    const meta = await readJson<EntryMeta>(path);
    const info = await stat(file).catch(() => undefined);
    if (meta && info?.isFile() && info.size === meta.size) cached.push({ uri: meta.uri, path: file, size: meta.size });
  }
  cached.sort((a, b) => a.uri.localeCompare(b.uri));
  return { catalog: await loadCatalog(), cached };
}

function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith(sep) && !resolve(dir, rel).startsWith('..');
}

/**
 * Deletes the cached files of `spec` (a catalog name, an hf: URI, an https URL, or a path
 * inside the cache) with their metadata and partial downloads; resolves with what was removed.
 * Files outside the cache are never deleted.
 */
export async function removeModel(spec: string, options?: { cacheDir?: string }): Promise<string[]> {
  const cache = cacheDirOf(options);
  const plan = await planSpec({ model: spec }, cache, (q) => cachedListing(cache, q));
  const removed: string[] = [];
  for (const f of [plan.model, plan.projector]) {
    if (!f || f.source.kind === 'hf-quant') continue;
    if (!inside(cache, resolve(f.path))) {
      if (f.source.kind === 'local') throw new InvalidArgumentError(`${f.path} is not in the model cache ${cache}; removeModel deletes only cached downloads`);
      continue;
    }
    for (const p of [f.path, metaPath(f.path), partPath(f.path), partStatePath(f.path)]) {
      if (await unlink(p).then(() => true, () => false)) removed.push(p);
    }
    // Empty directories up to the cache root go too (rmdir fails on a non-empty one).
    for (let d = dirname(resolve(f.path)); inside(cache, d); d = dirname(d)) {
      if (!(await rmdir(d).then(() => true, () => false))) break;
    }
  }
  return removed;
}
