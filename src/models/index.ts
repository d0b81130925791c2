/**
 * Models by name: `hf:` URIs, https URLs and catalog names resolved to verified files in a
 * local cache, before anything is loaded.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { requireFilePath } from '../validate.js';
import { stat } from 'node:fs/promises';
import { loadCatalog } from './catalog.js';
import { cachedListing, planSpec, publicPlan, type ResolvedModel } from './plan.js';
import { pullPlan, settings, type PullOptions } from './pull.js';
import { parseSpec } from './spec.js';

export { modelsDir } from './cache.js';
export { listModels, removeModel } from './list.js';
export { pullModel } from './pull.js';
export type { PullOptions } from './pull.js';
export type { RecipeOptions, RecipeStep, RecipeStepEvent } from './recipe-spec.js';
export type { ModelFile, ResolvedModel } from './plan.js';
export type { DownloadProgress } from './progress.js';
export type { CatalogEntry, CatalogFile } from './catalog.js';

/**
 * What `spec` (a path, `file:` URL, `hf:` URI, https URL or catalog name) names and whether
 * each file is cached, without any network request. For `hf:owner/repo:quant` the files are
 * known only once the repo's listing is in the cache (after a first pull); before that
 * `model.path` is the directory they will go to and `projector` is absent.
 * @throws InvalidArgumentError `ERR_INVALID_ARGUMENT` for a malformed URI or an unknown catalog name
 */
export async function planModel(spec: { model: string | URL; projector?: string | URL }, options?: PullOptions): Promise<ResolvedModel> {
  const s = settings(options);
  return publicPlan(await planSpec(spec, s.cache, (q) => cachedListing(s.cache, q)));
}

/** @internal What loadModel's `download` option may hold. */
export type LoadDownloadOption = boolean | Omit<PullOptions, 'signal'>;

/**
 * @internal The local paths loadModel loads: local specs as they are (no catalog is read for
 * them), anything else pulled first (or, with `download: false`, taken from the cache only).
 */
export async function resolveForLoad(
  model: unknown,
  projector: unknown,
  download: unknown,
  signal: AbortSignal | undefined,
): Promise<{ modelPath: string; projectorPath?: string }> {
  const modelSpec = parseSpec(model, 'model');
  const projectorSpec = projector === undefined ? undefined : parseSpec(projector, 'projector');
  const local = (s: typeof modelSpec) => s.kind === 'local';
  // A bare word that is no catalog name stays a path, for loadModel's own "file not found".
  const catalogName = modelSpec.kind === 'name' && !(await stat(modelSpec.name).then((i) => i.isFile(), () => false)) && (await loadCatalog()).some((e) => e.name === modelSpec.name);
  if ((local(modelSpec) || (modelSpec.kind === 'name' && !catalogName)) && (!projectorSpec || local(projectorSpec) || projectorSpec.kind === 'name')) {
    return {
      modelPath: modelSpec.kind === 'name' ? modelSpec.name : requireFilePath(model, 'model'),
      projectorPath: projector === undefined ? undefined : projectorSpec?.kind === 'name' ? projectorSpec.name : requireFilePath(projector, 'projector'),
    };
  }
  let options: PullOptions = {};
  if (download === false) options = { offline: true };
  else if (download !== undefined && download !== true) {
    if (download === null || typeof download !== 'object') throw new InvalidArgumentError(`Expected a boolean or pull options object for download but received ${download === null ? 'null' : typeof download}`);
    if ('signal' in download) throw new InvalidArgumentError('download.signal is not an option: loadModel\'s own signal stops the download too');
    options = { ...(download as PullOptions) };
  }
  const plan = await pullPlan({ model: model as string | URL, projector: projector as string | URL | undefined }, settings({ ...options, signal }));
  return { modelPath: plan.model.path, projectorPath: plan.projector?.path };
}
