/**
 * @internal
 * A catalog recipe: the original checkpoints a model is built from (issue 17) and where the
 * finished pair lives in the cache. Pure data and paths, no conversion code, so reading the
 * catalog or planning never loads the converters or the addon.
 *
 *   <cache>/recipes/<name>/<type>-<encoderType>/state.json          steps done so far
 *   <cache>/recipes/<name>/<type>-<encoderType>/model-<type>.gguf   the finished LLM
 *   <cache>/recipes/<name>/<type>-<encoderType>/mmproj-<enc>.gguf   the finished projector
 *   <cache>/recipes/<name>/current.json                             the last finished build
 * @module
 */
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { readJson } from './cache.js';

/** One checkpoint a recipe needs: downloaded from `uri`, or (without one) brought by the user. */
export interface RecipeFile {
  /** The file's name: how `--from` folders are searched, and what the messages call it. */
  name: string;
  /** `hf:owner/repo/file#revision` or an https URL; absent for a file the user must bring. */
  uri?: string;
  size?: number;
  sha256?: string;
  /** For a file without `uri`: where a person gets it (e.g. a Google Drive page). */
  get?: string;
}

/** How a catalog entry is built from its original checkpoints. */
export interface Recipe {
  /** The image encoder's checkpoints, in convertBlip2's input order (later tensors win). */
  encoder: RecipeFile[];
  /** A Hugging Face LLaMA/Vicuna folder, `hf:owner/repo[#revision]`. */
  llm: { uri: string; get?: string };
  template: 'minigpt4-v0' | 'minigpt4-llama2';
  /** Default quantization of the LLM (llama.cpp's names). */
  type: string;
  /** Default type of the encoder's matrices (convertBlip2's names). */
  encoderType: string;
}

const TEMPLATES = ['minigpt4-v0', 'minigpt4-llama2'];

function recipeFile(value: unknown, where: string): RecipeFile {
  const f = value as Partial<RecipeFile> | null;
  const bad = (why: string) => new InvalidArgumentError(`Catalog ${where}: ${why}; expected { name?, uri?, size?, sha256?, get? } with a uri or a get`);
  if (f === null || typeof f !== 'object') throw bad('not an object');
  if (f.uri !== undefined && typeof f.uri !== 'string') throw bad('uri is not a string');
  if (f.get !== undefined && typeof f.get !== 'string') throw bad('get is not a string');
  if (f.size !== undefined && (typeof f.size !== 'number' || !Number.isSafeInteger(f.size) || f.size < 0)) throw bad('size is not a byte count');
  if (f.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(String(f.sha256))) throw bad('sha256 is not 64 hex digits');
  if (f.uri === undefined && f.get === undefined) throw bad('neither uri nor get');
  const fromUri = f.uri ? basename(f.uri.replace(/#.*$/, '')) : undefined;
  const name = typeof f.name === 'string' && f.name ? f.name : fromUri;
  if (!name || name.includes('/') || name.includes('\\')) throw bad('no plain file name');
  const out: RecipeFile = { name };
  if (f.uri !== undefined) out.uri = f.uri;
  if (f.size !== undefined) out.size = f.size;
  if (f.sha256 !== undefined) out.sha256 = f.sha256;
  if (f.get !== undefined) out.get = f.get;
  return out;
}

/** Checks a catalog entry's `recipe`; `ERR_INVALID_ARGUMENT` naming what is wrong. */
export function parseRecipe(value: unknown, where: string): Recipe {
  const r = value as Record<string, unknown> | null;
  if (r === null || typeof r !== 'object') throw new InvalidArgumentError(`Catalog ${where} is not an object`);
  if (!Array.isArray(r.encoder) || r.encoder.length === 0) throw new InvalidArgumentError(`Catalog ${where}.encoder must list the encoder's checkpoint files`);
  const llm = r.llm as Record<string, unknown> | null;
  if (llm === null || typeof llm !== 'object' || typeof llm.uri !== 'string' || !/^hf:[^/]+\/[^/#:]+(#.+)?$/.test(llm.uri)) {
    throw new InvalidArgumentError(`Catalog ${where}.llm must be { uri: "hf:owner/repo[#revision]" } (a Hugging Face LLaMA folder)`);
  }
  if (!TEMPLATES.includes(String(r.template))) throw new InvalidArgumentError(`Catalog ${where}.template must be one of ${TEMPLATES.join(', ')}`);
  if (typeof r.type !== 'string' || typeof r.encoderType !== 'string') throw new InvalidArgumentError(`Catalog ${where} needs type (e.g. Q4_K_M) and encoderType (e.g. q8_0)`);
  return {
    encoder: r.encoder.map((f, i) => recipeFile(f, `${where}.encoder[${i}]`)),
    llm: { uri: llm.uri, ...(typeof llm.get === 'string' ? { get: llm.get } : {}) },
    template: r.template as Recipe['template'],
    type: r.type,
    encoderType: r.encoderType,
  };
}

export function recipeRoot(cache: string, name: string): string {
  return join(cache, 'recipes', name);
}

/** The folder of one build of a recipe, and its outputs. */
export function recipeOutputs(cache: string, name: string, type: string, encoderType: string) {
  const dir = join(recipeRoot(cache, name), `${type}-${encoderType}`);
  return {
    dir,
    state: join(dir, 'state.json'),
    model: join(dir, `model-${type}.gguf`),
    projector: join(dir, `mmproj-${encoderType}.gguf`),
    f16: join(dir, 'llm-f16.gguf'),
  };
}

export const currentPath = (cache: string, name: string): string => join(recipeRoot(cache, name), 'current.json');

/** The pair a recipe's name loads: the last finished build, else the default build's paths (not cached). */
export async function recipePair(cache: string, name: string, recipe: Recipe): Promise<{ model: string; projector: string; cached: boolean }> {
  const current = await readJson<{ type?: string; encoderType?: string }>(currentPath(cache, name));
  const out = recipeOutputs(cache, name, current?.type ?? recipe.type, current?.encoderType ?? recipe.encoderType);
  const isFile = (p: string) => stat(p).then((s) => s.isFile(), () => false);
  const cached = current !== undefined && (await isFile(out.model)) && (await isFile(out.projector));
  return { model: out.model, projector: out.projector, cached };
}

/** The steps of a recipe, in order. */
export type RecipeStep = 'download' | 'encoder' | 'llm' | 'quantize' | 'cleanup';

/** What {@link RecipeOptions.onStep} is told. */
export interface RecipeStepEvent {
  step: RecipeStep;
  /** `skipped`: recorded done by an earlier run and its output is still there. */
  state: 'start' | 'done' | 'skipped';
  /** The step's output (or what it removed, for cleanup). */
  detail?: string;
}

/** Options of `pullModel` for a catalog entry built from checkpoints (a recipe). */
export interface RecipeOptions {
  /** Quantization of the LLM, as `llama-quantize` names it. Default: the entry's (Q4_K_M). */
  type?: string;
  /** Type of the encoder's matrices (`f32`, `f16`, `q8_0`, ...). Default: the entry's (q8_0). */
  encoderType?: string;
  /** Keep the downloaded checkpoints and the f16 LLM GGUF (removed by default once the pair is built). */
  keep?: boolean;
  /**
   * Checkpoints already on disk, used instead of downloading: files (matched to the recipe's
   * files by name, e.g. `eva_vit_g.pth`) and folders (searched for those names; a folder with
   * a config.json, or its only subfolder with one, is the LLM). Files not found are downloaded.
   */
  from?: string | string[];
  /** Called as each step starts, finishes or is skipped. */
  onStep?: (e: RecipeStepEvent) => void;
}

export const recipeKeys = ['type', 'encoderType', 'keep', 'from', 'onStep'] as const;

