/**
 * @internal
 * Runs a catalog recipe (issue 17): download the original checkpoints (or take the user's),
 * convert the encoder (convertBlip2) and the LLM (convertLlama to f16), quantize the LLM with
 * llama.cpp's quantizer, and leave the pair where a recipe name resolves (recipe-spec.ts).
 *
 * Each step's output is written as `<out>.part` and renamed, and each finished step is recorded
 * in `state.json` (written to a temporary file and renamed), so a run killed at any point
 * continues from the step it was in: what is recorded done and still on disk is not redone,
 * and the downloads resume from their own `.part` files.
 * @module
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { DownloadError, InvalidArgumentError, throwIfAborted } from '../errors.js';
import { cachedEntry, hfRevisionDir, metaPath, readJson, writeJson } from './cache.js';
import type { CatalogEntry } from './catalog.js';
import { acquireLock } from './lock.js';
import { cachedListing, planFile, type FilePlan } from './plan.js';
import { fetchListing, pullFile, type Settings } from './pull.js';
import { currentPath, recipeOutputs, type Recipe, type RecipeFile, type RecipeOptions, type RecipeStep } from './recipe-spec.js';
import { parseSpec } from './spec.js';
import type { HubFile } from './hub.js';

interface State {
  done: RecipeStep[];
  encoder?: string[];
  llm?: string;
  /** Files this recipe downloaded into the cache (cleanup removes them; never the user's). */
  downloaded?: string[];
  /** The `from` paths the inputs were taken with. */
  from?: string[];
}

const ENCODER_TYPES = ['f32', 'f16', 'q8_0', 'q5_0', 'q5_1', 'q4_0', 'q4_1'];
// What convertLlama reads from an HF folder; weights are picked apart below.
const LLM_FILES = ['config.json', 'tokenizer.model', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'added_tokens.json'];

const exists = (p: string) => stat(p).then(() => true, () => false);

/** Where the user's own checkpoints are: files by name, and LLM folders. */
async function localIndex(from: string[]): Promise<{ files: Map<string, string>; llm: string[] }> {
  const files = new Map<string, string>();
  const llm: string[] = [];
  for (const p of from.map((f) => resolve(f))) {
    const info = await stat(p).catch(() => undefined);
    if (!info) throw new InvalidArgumentError(`from: ${p} does not exist`);
    if (info.isFile()) {
      files.set(basename(p), p);
      continue;
    }
    if (await exists(join(p, 'config.json'))) llm.push(p);
    for (const e of await readdir(p, { withFileTypes: true })) {
      const child = join(p, e.name);
      if (e.isFile() && !files.has(e.name)) files.set(e.name, child);
      else if (e.isDirectory() && (await exists(join(child, 'config.json')))) llm.push(child);
    }
  }
  return { files, llm: [...new Set(llm)] };
}

/** The files of a hub LLaMA folder that the converter needs: safetensors if any, else .bin. */
export function llmFilesOf(listing: HubFile[]): HubFile[] {
  const top = listing.filter((f) => !f.path.includes('/'));
  const safe = top.filter((f) => /^model.*\.safetensors$/.test(f.path) || f.path === 'model.safetensors.index.json');
  const bin = top.filter((f) => /^pytorch_model.*\.bin$/.test(f.path) || f.path === 'pytorch_model.bin.index.json');
  const weights = safe.some((f) => f.path.endsWith('.safetensors')) ? safe : bin;
  return [...top.filter((f) => LLM_FILES.includes(f.path)), ...weights];
}

function notCached(s: Settings, what: string): DownloadError {
  return new DownloadError(`Offline: ${what} is not in the cache and no download is made; pull once online, or pass the checkpoints you have with from (--from <folder>)`);
}

async function pullOne(s: Settings, f: FilePlan): Promise<FilePlan> {
  if (s.offline) {
    if (!f.cached) throw notCached(s, f.uri);
    return f;
  }
  return pullFile(s, f);
}

/** Step 1: every input on disk, the user's where given, else downloaded (resumable, verified). */
async function fetchInputs(entry: CatalogEntry, recipe: Recipe, s: Settings, from: string[]): Promise<Required<Pick<State, 'encoder' | 'llm' | 'downloaded'>>> {
  const local = await localIndex(from);
  const downloaded: string[] = [];
  const missing = recipe.encoder.filter((f) => !f.uri && !local.files.has(f.name));
  if (missing.length) throw bringYourOwn(entry.name, missing);
  const encoder: string[] = [];
  for (const f of recipe.encoder) {
    const mine = local.files.get(f.name);
    if (mine) {
      encoder.push(mine);
      continue;
    }
    const spec = parseSpec(f.uri, `catalog ${entry.name} encoder file`);
    if (spec.kind !== 'hf-file' && spec.kind !== 'url') throw new InvalidArgumentError(`Catalog entry ${entry.name}: ${f.uri} is not an hf: file URI or https URL`);
    const got = await pullOne(s, await planFile(spec, s.cache, { size: f.size, sha256: f.sha256 }));
    encoder.push(got.path);
    downloaded.push(got.path);
  }
  if (local.llm.length > 1) throw new InvalidArgumentError(`from gives several LLM folders (${local.llm.join(', ')}): pass only the one for ${entry.name}`);
  if (local.llm.length === 1) return { encoder, llm: local.llm[0]!, downloaded };

  const spec = parseSpec(recipe.llm.uri, `catalog ${entry.name} llm`);
  if (spec.kind !== 'hf-quant' || spec.quant) throw new InvalidArgumentError(`Catalog entry ${entry.name}: llm ${recipe.llm.uri} is not hf:owner/repo[#revision]`);
  const listing = s.offline ? await cachedListing(s.cache, spec) : await fetchListing(s, spec);
  if (!listing) throw notCached(s, `the file list of ${recipe.llm.uri}`);
  const files = llmFilesOf(listing);
  if (!files.some((f) => f.path === 'config.json') || !files.some((f) => /\.(safetensors|bin)$/.test(f.path))) {
    throw new DownloadError(`${recipe.llm.uri} has no config.json and weights at its top level (files: ${listing.map((f) => f.path).slice(0, 20).join(', ')}); it is not a Hugging Face LLaMA folder`);
  }
  for (const f of files) {
    const got = await pullOne(s, await planFile({ kind: 'hf-file', repo: spec.repo, file: f.path, revision: spec.revision }, s.cache, { size: f.size, sha256: f.sha256 }));
    downloaded.push(got.path);
  }
  return { encoder, llm: hfRevisionDir(s.cache, spec.repo, spec.revision), downloaded };
}

function bringYourOwn(name: string, files: RecipeFile[]): InvalidArgumentError {
  const list = files.map((f) => `${f.name}${f.get ? ` (get it from ${f.get})` : ''}`).join('; ');
  return new InvalidArgumentError(
    `${name} needs ${list}, which has no direct download we could verify: download it yourself, then pass it, or the folder holding it, with --from <path> (pullModel option from)`,
  );
}

/**
 * Builds `entry`'s model + projector pair in the cache, continuing a build that was stopped.
 * Resolves once both files are in place (the caller then resolves the name to them).
 */
export async function runRecipe(entry: CatalogEntry, s: Settings, options: RecipeOptions): Promise<void> {
  const recipe = entry.recipe!;
  const { quantizeType, quantize } = await import('../quantize.js');
  const type = quantizeType(options.type ?? recipe.type);
  const encoderType = String(options.encoderType ?? recipe.encoderType).toLowerCase();
  if (!ENCODER_TYPES.includes(encoderType)) throw new InvalidArgumentError(`encoderType must be one of ${ENCODER_TYPES.join(', ')}, not ${JSON.stringify(options.encoderType)}`);
  if (options.keep !== undefined && typeof options.keep !== 'boolean') throw new InvalidArgumentError(`Expected a boolean for keep but received ${typeof options.keep}`);
  const from = options.from === undefined ? [] : Array.isArray(options.from) ? options.from : [options.from];
  if (!from.every((p) => typeof p === 'string' && p !== '')) throw new InvalidArgumentError('from must be a path or an array of paths');
  const onStep = options.onStep;
  if (onStep !== undefined && typeof onStep !== 'function') throw new InvalidArgumentError(`Expected a function for onStep but received ${typeof onStep}`);
  const signal = s.signal;

  const out = recipeOutputs(s.cache, entry.name, type, encoderType);
  await mkdir(out.dir, { recursive: true });
  const lock = await acquireLock(join(out.dir, 'build.lock'), signal);
  try {
    const state: State = { done: [], ...(await readJson<State>(out.state)) };
    if (!Array.isArray(state.done)) state.done = [];
    // Other local files than last time replace what that run used; the same ones (the same
    // command run again) do not undo its steps.
    const fromKey = from.map((p) => resolve(p)).sort();
    if (JSON.stringify(fromKey) !== JSON.stringify(state.from ?? [])) state.done = state.done.filter((d) => d !== 'download');
    const isDone = async (step: RecipeStep, output: string) => state.done.includes(step) && (await exists(output));
    const mark = async (step: RecipeStep, patch: Partial<State> = {}) => {
      Object.assign(state, patch);
      if (!state.done.includes(step)) state.done.push(step);
      await writeJson(out.state, state);
    };
    const step = async (name: RecipeStep, output: string, needed: boolean, work: () => Promise<Partial<State> | void>) => {
      if (!needed) {
        onStep?.({ step: name, state: 'skipped', detail: output });
        return;
      }
      throwIfAborted(signal);
      onStep?.({ step: name, state: 'start', detail: output });
      await mark(name, (await work()) ?? {});
      onStep?.({ step: name, state: 'done', detail: output });
    };

    const needQuantize = !(await isDone('quantize', out.model));
    const needLlm = needQuantize && !(await isDone('llm', out.f16));
    const needEncoder = !(await isDone('encoder', out.projector));
    const inputsThere = state.done.includes('download') && state.llm !== undefined && (await exists(state.llm)) &&
      (await Promise.all((state.encoder ?? []).map(exists))).every(Boolean) && (state.encoder?.length ?? 0) > 0;
    // A changed step drops what was built from it, so nothing stale survives a rerun.
    const invalidate = (...steps: RecipeStep[]) => { state.done = state.done.filter((d) => !steps.includes(d)); };

    await step('download', out.dir, (needEncoder || needLlm) && !inputsThere, async () => {
      invalidate('encoder', 'llm', 'quantize', 'cleanup');
      return { ...(await fetchInputs(entry, recipe, s, from)), from: fromKey };
    });
    await step('encoder', out.projector, needEncoder, async () => {
      invalidate('cleanup');
      const { convertBlip2 } = await import('../convert/blip2.js');
      await convertBlip2({ inputs: state.encoder!, output: out.projector, type: encoderType as 'q8_0', promptTemplate: recipe.template, name: entry.name });
    });
    await step('llm', out.f16, needLlm, async () => {
      invalidate('quantize', 'cleanup');
      const { convertLlama } = await import('../convert/llama.js');
      await convertLlama({ input: state.llm!, output: out.f16, type: 'f16', signal });
    });
    await step('quantize', out.model, needQuantize, async () => {
      invalidate('cleanup');
      await quantize({ input: out.f16, output: out.model, type, signal });
    });
    await writeJson(currentPath(s.cache, entry.name), { type, encoderType });
    await step('cleanup', out.dir, !options.keep && !state.done.includes('cleanup'), async () => {
      await rm(out.f16, { force: true });
      for (const f of state.downloaded ?? []) {
        // Only a complete download of ours; a file another entry shares is fetched again if needed.
        if (await cachedEntry(f)) await rm(f, { force: true }).then(() => rm(metaPath(f), { force: true }));
      }
      return { downloaded: [] };
    });
  } finally {
    await lock.release();
  }
}
