/**
 * @internal
 * `minigpt models`: the catalog (what `pull <name>` and `describe` without --model can get) and
 * what is in the cache, with sizes.
 */
import type { CatalogEntry } from '../models/index.js';
import { parseCommand, type OptionSpec } from './args.js';
import { formatBytes } from './download-progress.js';

export const modelsUsage = `  minigpt models   list the catalog's models (the default marked) and what is in the cache, with sizes
`;

const options: Record<string, OptionSpec> = {};

/** Runs the subcommand; returns the exit code. */
export async function models(argv: string[]): Promise<number> {
  const { help } = parseCommand('models', argv, options, false);
  if (help) {
    process.stdout.write(`Usage:\n${modelsUsage}`);
    return 0;
  }
  const { listModels, modelsDir } = await import('../models/index.js');
  const { catalog, cached } = await listModels();
  const cachedUris = new Set(cached.map((c) => c.uri));
  const out: string[] = ["Catalog ('minigpt pull <name>'; '*' is what 'minigpt describe' uses without --model):"];
  const width = Math.max(0, ...catalog.map((e) => e.name.length));
  for (const entry of catalog) {
    const mark = entry.default ? '*' : ' ';
    out.push(`${mark} ${entry.name.padEnd(width)}  ${status(entry, cachedUris).padEnd(26)}  ${entry.license}`);
    out.push(`  ${' '.repeat(width)}  ${entry.description}`);
  }
  const dir = modelsDir();
  if (cached.length === 0) {
    out.push('', `Cache (${dir}): empty`);
  } else {
    const total = cached.reduce((sum, c) => sum + c.size, 0);
    out.push('', `Cache (${dir}): ${cached.length} file${cached.length === 1 ? '' : 's'}, ${formatBytes(total)}`);
    for (const c of [...cached].sort((a, b) => a.uri.localeCompare(b.uri))) out.push(`  ${formatBytes(c.size).padStart(8)}  ${c.uri}`);
  }
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

/** "545.6 MB, downloaded", "3.3 GB", "not downloadable yet". */
function status(entry: CatalogEntry, cachedUris: Set<string>): string {
  if (entry.recipe) return 'built from checkpoints';
  if (entry.placeholder || !entry.model) return 'not downloadable yet';
  const files = [entry.model, entry.projector].filter((f) => f !== undefined);
  const known = files.every((f) => typeof f.size === 'number');
  const size = known ? formatBytes(files.reduce((sum, f) => sum + (f.size ?? 0), 0)) : 'size unknown';
  const have = files.filter((f) => cachedUris.has(f.uri)).length;
  if (have === files.length) return `${size}, downloaded`;
  if (have > 0) return `${size}, partly downloaded`;
  return size;
}
