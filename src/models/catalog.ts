/**
 * The catalog: named, known-good model sets, read at run time from catalog/models.json at the
 * package root (MINIGPT_CATALOG names another file, for tests and private catalogs).
 * @module
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from '../errors.js';
import { parseRecipe, type Recipe } from './recipe-spec.js';

/** One file of a catalog entry, pinned by revision, and by size and hash where they were verified (else the hub's, at download). */
export interface CatalogFile {
  /** `hf:owner/repo/file.gguf#<commit>` (or an https URL). */
  uri: string;
  /** Bytes. */
  size?: number;
  /** Hex sha256 (the hub's LFS oid). */
  sha256?: string;
}

/** A named model set. */
export interface CatalogEntry {
  name: string;
  description: string;
  license: string;
  /** The entry used when no model is named (e.g. by `minigpt describe photo.jpg`). */
  default?: boolean;
  model?: CatalogFile;
  projector?: CatalogFile;
  /** Listed but not downloadable yet (no published GGUF). */
  placeholder?: boolean;
  /** Built from original checkpoints by `pullModel` / `minigpt pull` instead of downloaded as GGUF. */
  recipe?: Recipe;
  /** Public pages the entry was checked against. */
  sources: string[];
}

export function catalogPath(): string {
  return process.env.MINIGPT_CATALOG || fileURLToPath(new URL('../../catalog/models.json', import.meta.url));
}

function file(value: unknown, where: string): CatalogFile | undefined {
  if (value === undefined) return undefined;
  const f = value as Partial<CatalogFile>;
  if (typeof f?.uri !== 'string' || (f.size !== undefined && (typeof f.size !== 'number' || !Number.isSafeInteger(f.size) || f.size < 0)) || (f.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(f.sha256))) {
    throw new InvalidArgumentError(`Catalog ${where} needs { uri: string, size?: bytes, sha256?: 64 hex digits }`);
  }
  return { uri: f.uri, size: f.size, sha256: f.sha256 };
}

/** The entries of the catalog; none when the file is missing. */
export async function loadCatalog(): Promise<CatalogEntry[]> {
  const path = catalogPath();
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  let json: { default?: unknown; models?: Record<string, Record<string, unknown>> };
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`The model catalog ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const entries: CatalogEntry[] = [];
  for (const [name, e] of Object.entries(json.models ?? {})) {
    const entry: CatalogEntry = {
      name,
      description: String(e.description ?? ''),
      license: String(e.license ?? ''),
      sources: Array.isArray(e.sources) ? e.sources.map(String) : [],
    };
    if (json.default === name) entry.default = true;
    if (e.placeholder === true) entry.placeholder = true;
    const model = file(e.model, `${path} entry ${name}.model`);
    const projector = file(e.projector, `${path} entry ${name}.projector`);
    if (model) entry.model = model;
    if (projector) entry.projector = projector;
    if (e.recipe !== undefined) entry.recipe = parseRecipe(e.recipe, `${path} entry ${name}.recipe`);
    if (!model && !entry.placeholder && !entry.recipe) throw new InvalidArgumentError(`Catalog ${path} entry ${name} has no model and is not a placeholder`);
    entries.push(entry);
  }
  return entries;
}

/** The entry called `name`; `ERR_INVALID_ARGUMENT` naming the known ones otherwise. */
export async function findCatalogEntry(name: string): Promise<CatalogEntry> {
  const entries = await loadCatalog();
  const entry = entries.find((e) => e.name === name);
  if (!entry) {
    const known = entries.map((e) => e.name).join(', ') || 'none';
    throw new InvalidArgumentError(`${JSON.stringify(name)} is neither a file nor a catalog model name (known names: ${known}); give a path, an hf: URI or an https URL`);
  }
  if (!entry.recipe && (entry.placeholder || !entry.model)) {
    throw new InvalidArgumentError(`Catalog model ${name} is a placeholder: no GGUF of it is published yet (${entry.description}); convert one with convertLlama/convertBlip2 and pass the paths`);
  }
  return entry;
}
