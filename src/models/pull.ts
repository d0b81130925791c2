/**
 * pullModel: every file of a spec made local, downloading (verified) what the cache lacks.
 * @module
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DownloadError, InvalidArgumentError, throwIfAborted } from '../errors.js';
import { checkKeys, optBoolean, optFunction, optSignal } from '../validate.js';
import { cachedEntry, hfTreePath, writeJson } from './cache.js';
import { downloadFile } from './download.js';
import { NetworkError, type FailureContext, type HttpContext } from './http.js';
import { headFile, listRepo, resolveUrl, type HubFile, type RemoteInfo } from './hub.js';
import { cacheDirOf, cachedListing, catalogEntryFor, planSpec, publicPlan, type FilePlan, type Plan, type ResolvedModel } from './plan.js';
import type { DownloadProgress } from './progress.js';
import { withRetries } from './retry.js';
import { isCommit, parseSpec, type HfQuantSpec } from './spec.js';
import { recipeKeys, type RecipeOptions } from './recipe-spec.js';
import { hfToken } from './token.js';

/** Options of {@link pullModel} and {@link planModel}. */
export interface PullOptions {
  /** Stops the download; the `.part` file stays and the next pull resumes it. */
  signal?: AbortSignal;
  /** Called as bytes arrive (at most every 100 ms per file, and once when a file is complete). */
  onProgress?: (p: DownloadProgress) => void;
  /** Use only the cache, with no request at all. Defaults to `true` when MINIGPT_OFFLINE=1 (or HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** The hub or a mirror of it. Defaults to HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Hugging Face access token, sent only to the endpoint's origin. Defaults to HF_TOKEN, else the Hugging Face token file. */
  token?: string;
  /** The cache. Defaults to {@link modelsDir}(). */
  cacheDir?: string;
}

const pullKeys = ['signal', 'onProgress', 'offline', 'endpoint', 'token', 'cacheDir'] as const;

export interface Settings {
  cache: string;
  offline: boolean;
  signal?: AbortSignal;
  onProgress?: (p: DownloadProgress) => void;
  endpoint: URL;
  token: () => Promise<string | undefined>;
}

export function settings(options: PullOptions | undefined): Settings {
  const o = checkKeys(options ?? {}, pullKeys, 'pull options');
  const envOffline = process.env.MINIGPT_OFFLINE === '1' || process.env.HF_HUB_OFFLINE === '1';
  const offline = optBoolean(o, 'offline', envOffline);
  const onProgress = optFunction<(p: DownloadProgress) => void>(o, 'onProgress');
  const signal = optSignal(o);
  const endpointText = o.endpoint ?? (process.env.HF_ENDPOINT || 'https://huggingface.co');
  if (typeof endpointText !== 'string') throw new InvalidArgumentError(`Expected a URL string for endpoint but received ${typeof endpointText}`);
  let endpoint: URL;
  try {
    endpoint = new URL(endpointText);
  } catch (err) {
    throw new InvalidArgumentError(`endpoint (HF_ENDPOINT) is not a URL: ${endpointText}`, { cause: err });
  }
  // A mirror the user names explicitly may be plain http on their own network.
  if (endpoint.protocol !== 'https:' && endpoint.protocol !== 'http:') throw new InvalidArgumentError(`endpoint (HF_ENDPOINT) must be an https URL, not ${endpoint.protocol}`);
  if (o.token !== undefined && typeof o.token !== 'string') throw new InvalidArgumentError(`Expected a string for token but received ${typeof o.token}`);
  const given = o.token as string | undefined;
  let cached: Promise<string | undefined> | undefined;
  return { cache: cacheDirOf(o as { cacheDir?: string }), offline, signal, onProgress, endpoint, token: () => (cached ??= given !== undefined ? Promise.resolve(given || undefined) : hfToken()) };
}

export async function httpContext(s: Settings): Promise<HttpContext> {
  return { endpoint: s.endpoint, token: await s.token(), signal: s.signal };
}

/** A repo's listing from the hub, kept in the cache for offline use; the cached one if the hub cannot be reached. */
export async function fetchListing(s: Settings, q: HfQuantSpec): Promise<HubFile[]> {
  const http = await httpContext(s);
  const failure: FailureContext = { repo: q.repo, revision: q.revision, endpoint: s.endpoint, tokenSent: !!http.token };
  try {
    const files = await withRetries(() => listRepo(http, q.repo, q.revision, failure), s.signal);
    const path = hfTreePath(s.cache, q.repo, q.revision);
    await mkdir(dirname(path), { recursive: true });
    await writeJson(path, files);
    return files;
  } catch (err) {
    const cached = err instanceof NetworkError ? await cachedListing(s.cache, q) : undefined;
    if (cached) return cached;
    throw err;
  }
}

function offlineError(missing: FilePlan[], s: { offline: boolean }, why: string): DownloadError {
  const list = missing.map((f) => `${f.uri} (${f.path})`).join(', ');
  return new DownloadError(`${why}, and these files are not in the cache ${list ? `: ${list}` : ''}. Unset MINIGPT_OFFLINE (or pass offline: false) and pull them first, e.g. npx minigpt pull ${missing[0]?.uri ?? ''}`.replace(' ,', ','));
}

/** Makes one planned file local. */
export async function pullFile(s: Settings, f: FilePlan): Promise<FilePlan> {
  if (f.source.kind === 'local' || f.source.kind === 'hf-quant') return f;
  const http = await httpContext(s);
  if (f.source.kind === 'hf') {
    const { repo, file, revision } = f.source;
    const url = resolveUrl(s.endpoint, repo, revision, file);
    const failure: FailureContext = { repo, file, revision, endpoint: s.endpoint, tokenSent: !!http.token };
    // A commit, or a hash from the catalog or the listing, pins the content: no need to ask.
    const pinned = isCommit(revision) || f.sha256 !== undefined;
    if (f.cached && pinned) return f;
    let info: RemoteInfo = {};
    if (!pinned || f.size === undefined) {
      try {
        // With a cached copy to fall back on, one try is enough to learn we are offline.
        info = f.cached ? await headFile(http, url, failure) : await withRetries(() => headFile(http, url, failure), s.signal);
      } catch (err) {
        if (f.cached && err instanceof NetworkError) return f;  // offline in fact: the cached copy will do
        throw err;
      }
    }
    if (f.sha256 && info.sha256 && f.sha256 !== info.sha256) {
      throw new DownloadError(`${f.uri}: the catalog or listing says sha256 ${f.sha256}, but the hub now says ${info.sha256}; the file changed on the hub: pin a revision (#<commit>)`, { url: url.href });
    }
    const sha256 = f.sha256 ?? info.sha256;
    if (f.cached && sha256 !== undefined && (await cachedEntry(f.path, { sha256 }))) return { ...f, sha256 };
    const meta = await downloadFile(
      { uri: f.uri, url, dest: f.path, size: f.size ?? info.size, sha256, etag: info.etag, revision, commit: info.commit ?? (isCommit(revision) ? revision : undefined), failure },
      { http, signal: s.signal, onProgress: s.onProgress },
    );
    return { ...f, size: meta.size, sha256: meta.sha256, cached: true };
  }
  // A URL names one content once fetched: the cached copy is used as is (removeModel refreshes).
  if (f.cached) return f;
  const url = f.source.url;
  const failure: FailureContext | undefined = url.origin === s.endpoint.origin ? { endpoint: s.endpoint, tokenSent: !!http.token } : undefined;
  let info: RemoteInfo = {};
  try {
    info = await withRetries(() => headFile(http, url, failure), s.signal);
  } catch (err) {
    // Some servers refuse HEAD; a GET says the same, and a real failure shows there again.
    if (!(err instanceof DownloadError) || (err.status !== 405 && err.status !== 501 && err.status !== 403)) throw err;
  }
  const meta = await downloadFile(
    { uri: f.uri, url, dest: f.path, size: f.size ?? info.size, sha256: f.sha256 ?? info.sha256, etag: info.etag, failure },
    { http, signal: s.signal, onProgress: s.onProgress },
  );
  return { ...f, size: meta.size, sha256: meta.sha256, cached: true };
}

/** Plans with the network, then downloads what is missing. */
export async function pullPlan(spec: { model: string | URL; projector?: string | URL }, s: Settings): Promise<Plan> {
  throwIfAborted(s.signal);
  const plan = await planSpec(spec, s.cache, (q) => (s.offline ? cachedListing(s.cache, q) : fetchListing(s, q)));
  if (plan.recipe && !plan.model.cached) {
    throw new DownloadError(`${plan.recipe} is built from its original checkpoints, not downloaded as one file, and it is not built yet: run 'npx minigpt pull ${plan.recipe}' (or pullModel({ model: '${plan.recipe}' })) first`);
  }
  const files = [plan.model, plan.projector].filter((f): f is FilePlan => f !== undefined);
  if (s.offline) {
    const missing = files.filter((f) => !f.cached);
    if (missing.length) {
      const why = process.env.MINIGPT_OFFLINE === '1' ? 'MINIGPT_OFFLINE=1 is set' : process.env.HF_HUB_OFFLINE === '1' ? 'HF_HUB_OFFLINE=1 is set' : 'offline: true was given';
      throw offlineError(missing, s, `Offline (${why}): no download is made`);
    }
    return plan;
  }
  const model = await pullFile(s, plan.model);
  const projector = plan.projector ? await pullFile(s, plan.projector) : undefined;
  return { ...plan, model, projector };
}

/**
 * Makes every file of `spec` local (downloading what is missing, resumable and verified
 * against the hub's sha256) and resolves with their paths. A catalog entry built from its
 * original checkpoints (a recipe, e.g. `minigpt4-7b`) is built here: downloaded (or taken
 * from `from`), converted and quantized, continuing where a stopped pull left off.
 * @example
 * const { model, projector } = await pullModel({ model: 'hf:ggml-org/SmolVLM-500M-Instruct-GGUF:Q8_0' }, { onProgress: console.log });
 * await pullModel({ model: 'minigpt4-7b' }, { type: 'Q4_K_M', encoderType: 'q8_0' });
 * @throws DownloadError `ERR_DOWNLOAD` (HTTP status and URL, hash mismatch, disk full, offline and not cached)
 * @throws InvalidArgumentError `ERR_INVALID_ARGUMENT` for a malformed URI, an unknown catalog name, or a checkpoint the user must bring and did not
 * @throws AbortedError `ERR_ABORTED` when `signal` aborts (a `.part` is kept for the next pull)
 */
export async function pullModel(spec: { model: string | URL; projector?: string | URL }, options?: PullOptions & RecipeOptions): Promise<ResolvedModel> {
  // The recipe's options go to the recipe; the rest are checked as any pull's (a non-object too).
  const isObject = options !== null && typeof options === 'object';
  const o = (isObject ? options : {}) as Record<string, unknown>;
  const isRecipeKey = (k: string) => (recipeKeys as readonly string[]).includes(k);
  const recipeOptions = Object.fromEntries(Object.entries(o).filter(([k, v]) => isRecipeKey(k) && v !== undefined)) as RecipeOptions;
  const s = settings((isObject ? Object.fromEntries(Object.entries(o).filter(([k]) => !isRecipeKey(k))) : options) as PullOptions | undefined);
  const entry = spec !== null && typeof spec === 'object' ? await catalogEntryFor(parseSpec(spec.model, 'model')) : undefined;
  if (entry?.recipe) {
    const { runRecipe } = await import('./recipe.js');
    await runRecipe(entry, s, recipeOptions);
  } else if (Object.keys(recipeOptions).some((k) => k !== 'onStep')) {
    // onStep is harmless elsewhere (never called), so one callback can serve every pull.
    throw new InvalidArgumentError(`${Object.keys(recipeOptions).filter((k) => k !== 'onStep').join(', ')}: only for catalog models built from checkpoints (minigpt4-7b, ...), not for ${String(spec?.model)}`);
  }
  return publicPlan(await pullPlan(spec, s));
}
