/**
 * From a spec to the files it names and whether each is cached, with no network request.
 * @module
 */
import { stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { cachedEntry, hfFilePath, hfRevisionDir, hfTreePath, modelsDir, readJson, urlFilePath } from './cache.js';
import { findCatalogEntry, type CatalogEntry } from './catalog.js';
import type { HubFile } from './hub.js';
import { isSplit, pickModel, pickProjector } from './pick.js';
import { recipePair } from './recipe-spec.js';
import { parseSpec, type HfQuantSpec, type Spec } from './spec.js';

/** A model file in the cache or about to be: what a spec resolves to. */
export interface ModelFile {
  /** Canonical: 'hf:owner/repo/path/in/repo.gguf#revision', the https URL, or the local path. */
  uri: string;
  /** Where it lives (or will live) in the cache; for a local file, its path. */
  path: string;
  /** Bytes, when known before the download. */
  size?: number;
  /** Hex sha256, when known (the hub's LFS oid, a catalog entry's or a URL's `#sha256=`). */
  sha256?: string;
  /** Complete and verified in the cache (or an existing local file). */
  cached: boolean;
}

/** What a model spec resolves to. */
export interface ResolvedModel {
  model: ModelFile;
  projector?: ModelFile;
  /** The catalog entry, when the spec was a catalog name. */
  catalogName?: string;
}

/** Where a file comes from, beside what the caller sees. */
export interface FilePlan extends ModelFile {
  source:
    | { kind: 'local' }
    | { kind: 'hf'; repo: string; file: string; revision: string }
    | { kind: 'url'; url: URL }
    /** `hf:owner/repo:quant` whose file listing is not cached yet. */
    | { kind: 'hf-quant'; spec: HfQuantSpec };
}

/** `recipe`: the catalog name of an entry built from checkpoints (its finished pair is `model`/`projector`). */
export interface Plan { model: FilePlan; projector?: FilePlan; catalogName?: string; recipe?: string }

export async function planFile(spec: Exclude<Spec, { kind: 'name' | 'hf-quant' }>, cache: string, expect: { size?: number; sha256?: string } = {}): Promise<FilePlan> {
  if (spec.kind === 'local') {
    const info = await stat(spec.path).catch(() => undefined);
    return { uri: spec.path, path: spec.path, size: info?.isFile() ? info.size : undefined, cached: !!info?.isFile(), source: { kind: 'local' } };
  }
  if (spec.kind === 'hf-file') {
    if (isSplit(spec.file)) throw new InvalidArgumentError(`${spec.file} is one part of a split GGUF; split models are not supported yet: pick a single-file quant`);
    const path = hfFilePath(cache, spec.repo, spec.revision, spec.file);
    const meta = await cachedEntry(path, expect);
    return {
      uri: `hf:${spec.repo}/${spec.file}#${spec.revision}`,
      path,
      size: expect.size ?? meta?.size,
      sha256: expect.sha256 ?? meta?.sha256,
      cached: !!meta,
      source: { kind: 'hf', repo: spec.repo, file: spec.file, revision: spec.revision },
    };
  }
  const sha256 = expect.sha256 ?? spec.sha256;
  if (expect.sha256 && spec.sha256 && expect.sha256 !== spec.sha256) throw new InvalidArgumentError(`${spec.url.href}: two different sha256 given`);
  const path = urlFilePath(cache, spec.url);
  const meta = await cachedEntry(path, { size: expect.size, sha256 });
  return { uri: spec.url.href, path, size: expect.size ?? meta?.size, sha256: sha256 ?? meta?.sha256, cached: !!meta, source: { kind: 'url', url: spec.url } };
}

/** The files `hf:owner/repo:quant` picks from a listing (as llama-server's `-hf`). */
export async function planQuant(spec: HfQuantSpec, files: HubFile[] | undefined, cache: string, withProjector: boolean): Promise<{ model: FilePlan; projector?: FilePlan }> {
  const uri = `hf:${spec.repo}${spec.quant ? `:${spec.quant}` : ''}#${spec.revision}`;
  if (!files) return { model: { uri, path: hfRevisionDir(cache, spec.repo, spec.revision), cached: false, source: { kind: 'hf-quant', spec } } };
  const chosen = pickModel(files, spec.quant);
  if (!chosen) {
    const ggufs = files.filter((f) => f.path.endsWith('.gguf')).map((f) => f.path);
    throw new InvalidArgumentError(
      `${uri}: no GGUF ${spec.quant ? `of quant ${spec.quant} ` : ''}in the repo; its GGUF files are: ${ggufs.join(', ') || 'none'}`,
    );
  }
  const asPlan = (f: HubFile) => planFile({ kind: 'hf-file', repo: spec.repo, file: f.path, revision: spec.revision }, cache, { size: f.size, sha256: f.sha256 });
  const model = await asPlan(chosen);
  const mmproj = withProjector ? pickProjector(files, chosen.path) : undefined;
  return { model, projector: mmproj ? await asPlan(mmproj) : undefined };
}

/** A bare word names a file in the working directory if there is one, else a catalog entry. */
export async function catalogEntryFor(spec: Spec): Promise<CatalogEntry | undefined> {
  if (spec.kind !== 'name') return undefined;
  if (await stat(spec.name).then((s) => s.isFile(), () => false)) return undefined;
  return findCatalogEntry(spec.name);
}

function asFileSpec(spec: Spec): Exclude<Spec, { kind: 'name' | 'hf-quant' }> {
  if (spec.kind === 'name') return { kind: 'local', path: spec.name };
  if (spec.kind === 'hf-quant') throw new InvalidArgumentError(`projector must name one file, not a repo quant (hf:owner/repo:quant); give hf:owner/repo/mmproj-file.gguf`);
  return spec;
}

/**
 * The plan of `spec`. `listing` gives a repo's files for a `:quant` URI (from the cache, or
 * from the hub when pulling); without one the model file stays unknown.
 */
export async function planSpec(
  spec: { model: string | URL; projector?: string | URL },
  cache: string,
  listing: (q: HfQuantSpec) => Promise<HubFile[] | undefined>,
): Promise<Plan> {
  if (spec === null || typeof spec !== 'object') throw new InvalidArgumentError('Expected an object { model, projector? } for spec');
  const modelSpec = parseSpec(spec.model, 'model');
  const projectorSpec = spec.projector === undefined ? undefined : asFileSpec(parseSpec(spec.projector, 'projector'));
  const projector = projectorSpec ? await planFile(projectorSpec, cache) : undefined;
  const entry = await catalogEntryFor(modelSpec);
  if (entry?.recipe) {
    const pair = await recipePair(cache, entry.name, entry.recipe);
    const built = (path: string): FilePlan => ({ uri: path, path, cached: pair.cached, source: { kind: 'local' } });
    return { model: built(pair.model), projector: projector ?? built(pair.projector), catalogName: entry.name, recipe: entry.name };
  }
  if (entry) {
    const fromCatalog = async (f: { uri: string; size?: number; sha256?: string }) => {
      const s = parseSpec(f.uri, `catalog ${entry.name}`);
      if (s.kind === 'name' || s.kind === 'hf-quant' || s.kind === 'local') throw new InvalidArgumentError(`Catalog entry ${entry.name}: ${f.uri} is not an hf: file URI or https URL`);
      return planFile(s, cache, { size: f.size, sha256: f.sha256 });
    };
    return {
      model: await fromCatalog(entry.model!),
      projector: projector ?? (entry.projector ? await fromCatalog(entry.projector) : undefined),
      catalogName: entry.name,
    };
  }
  if (modelSpec.kind === 'hf-quant') {
    const quant = await planQuant(modelSpec, await listing(modelSpec), cache, projector === undefined);
    return { model: quant.model, projector: projector ?? quant.projector };
  }
  return { model: await planFile(asFileSpec(modelSpec), cache), projector };
}

/** A repo's file listing as last fetched, if it was. */
export async function cachedListing(cache: string, q: HfQuantSpec): Promise<HubFile[] | undefined> {
  const files = await readJson<HubFile[]>(hfTreePath(cache, q.repo, q.revision));
  return Array.isArray(files) ? files : undefined;
}

export function cacheDirOf(options: { cacheDir?: string } | undefined): string {
  const dir = options?.cacheDir;
  if (dir === undefined) return modelsDir();
  if (typeof dir !== 'string' || dir === '') throw new InvalidArgumentError(`Expected a directory path for cacheDir but received ${typeof dir}`);
  return isAbsolute(dir) ? dir : resolve(dir);
}

export function publicFile(f: FilePlan): ModelFile {
  const out: ModelFile = { uri: f.uri, path: f.path, cached: f.cached };
  if (f.size !== undefined) out.size = f.size;
  if (f.sha256 !== undefined) out.sha256 = f.sha256;
  return out;
}

export function publicPlan(p: Plan): ResolvedModel {
  const out: ResolvedModel = { model: publicFile(p.model) };
  if (p.projector) out.projector = publicFile(p.projector);
  if (p.catalogName) out.catalogName = p.catalogName;
  return out;
}
