/**
 * Converts a Hugging Face LLaMA / Vicuna checkpoint folder (config.json, safetensors or
 * pytorch_model*.bin shards, SentencePiece tokenizer.model) into a llama.cpp GGUF equal to
 * what llama.cpp's own `convert_hf_to_gguf.py` writes for the same folder, without Python.
 * @module
 */
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { InvalidArgumentError, ModelLoadError, throwIfAborted } from '../errors.js';
import { kv, encodeGgufHeader } from '../gguf/write.js';
import { writeAtomically } from './write-atomically.js';
import { checkKeys, invalid, optFunction, optSignal, optString } from '../validate.js';
import { loadError } from './file-range.js';
import { FILE_TYPE, hparamMetadata, readLlamaConfig } from './llama-hparams.js';
import { generalMetadata } from './llama-metadata.js';
import { planTensors, type LlamaOutType } from './llama-tensors.js';
import { writeLlamaGguf } from './llama-writer.js';
import { OrderedKv, readJsonIn, vocabMetadata } from './llama-vocab.js';
import { openSafetensors } from './safetensors.js';
import { numel, type TensorSource } from './source.js';
import { openTorchCheckpoint } from './torch-checkpoint.js';

export type { LlamaOutType } from './llama-tensors.js';

/** Options of {@link convertLlama}. */
export interface ConvertLlamaOptions {
  /** The Hugging Face checkpoint folder (config.json, weights, tokenizer.model). */
  input: string;
  /** The GGUF file to write; written as `<output>.part` and renamed once complete. */
  output: string;
  /**
   * Type of the 2-D weights; norms and biases are always f32, as llama.cpp's converter
   * writes them. Default `f16`.
   */
  type?: LlamaOutType;
  /** `general.name`. Default: derived from config.json's `_name_or_path` or the folder name, as the script does. */
  name?: string;
  /** Called as tensor data is written: bytes done and total bytes of tensor data (done === total at the end). */
  onProgress?: (done: number, total: number) => void;
  /** Stops the conversion between tensors; the partial file is removed and the promise rejects with `ERR_ABORTED`. */
  signal?: AbortSignal;
}

/** What {@link convertLlama} wrote. */
export interface ConvertLlamaResult {
  /** Tensors written. */
  tensors: number;
  /** Size of the GGUF file. */
  bytes: number;
  /** Parameters (elements of all tensors). */
  parameters: number;
  /** config.json's architecture. */
  architecture: string;
  /** Tokens in the vocabulary. */
  vocabulary: number;
  /** What the script would have logged as warnings (out-of-range added tokens, special ids). */
  warnings: string[];
}

const TYPES: readonly LlamaOutType[] = ['f32', 'f16', 'bf16'];
const OPTION_KEYS = ['input', 'output', 'type', 'name', 'onProgress', 'signal'];

/**
 * Write the GGUF of a Hugging Face LLaMA-family checkpoint folder. Tensors are read,
 * converted and written one at a time, in chunks where no conversion is needed, so memory
 * stays bounded (near the largest tensor that needs converting), whatever the model size.
 *
 * Rejects with `InvalidArgumentError` (`ERR_INVALID_ARGUMENT`) for bad options or an
 * unwritable output, `ModelLoadError` (`ERR_MODEL_LOAD`) for an unknown architecture, a
 * missing, unknown or wrongly shaped tensor, or an unreadable tokenizer (each named), and
 * `AbortedError` (`ERR_ABORTED`) when `signal` aborts.
 *
 * @example
 * await convertLlama({ input: 'vicuna-7b', output: 'vicuna-7b-f16.gguf', onProgress: (d, t) => bar.update(d / t) });
 */
export async function convertLlama(options: ConvertLlamaOptions): Promise<ConvertLlamaResult> {
  const o = validate(options);
  throwIfAborted(o.signal);
  const folder = resolve(o.input);
  const st = await stat(folder).catch((err) => { throw loadError(folder, err); });
  if (!st.isDirectory()) throw new InvalidArgumentError(`input ${o.input} is not a folder: pass the Hugging Face checkpoint folder (config.json, weights, tokenizer.model)`);
  const configPath = join(folder, 'config.json');
  const config = await readJsonIn(folder, 'config.json');
  if (config === undefined) throw new ModelLoadError('ERR_MODEL_LOAD', `${folder} has no config.json`);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new ModelLoadError('ERR_MODEL_LOAD', `${configPath} is not a JSON object`);
  const cfg = readLlamaConfig(configPath, config as Record<string, unknown>);

  const weights = await openWeights(folder);
  try {
    const plan = planTensors(weights.tensors, cfg, o.type, cfg.prefixModel);
    const parameters = plan.reduce((a, t) => a + numel(t.source.shape), 0);

    const meta = new OrderedKv();
    meta.set(kv.str('general.architecture', 'llama'));
    meta.set(kv.str('general.type', 'model'));
    const generation = await readJsonIn(folder, 'generation_config.json').catch(() => undefined);
    for (const e of generalMetadata(folder, cfg.hparams, isObject(generation) ? generation : undefined, parameters)) meta.set(e);
    if (o.name) meta.set(kv.str('general.name', o.name));
    for (const e of hparamMetadata(configPath, cfg, FILE_TYPE[o.type])) meta.set(e);
    meta.set(kv.u32('general.quantization_version', 2));
    const vocab = await vocabMetadata(folder, cfg.vocab, meta);

    const header = encodeGgufHeader(meta.entries(), plan.map((t) => ({ name: t.name, type: t.type, shape: t.shape })));
    await writeAtomically(o.output, async (partial) => {
      await writeLlamaGguf(partial, header, plan, o.onProgress, o.signal);
      throwIfAborted(o.signal);
    });
    return {
      tensors: plan.length, bytes: (await stat(o.output)).size, parameters, architecture: cfg.architecture,
      vocabulary: vocab.tokens, warnings: vocab.warnings,
    };
  } finally {
    await weights.close();
  }
}

/**
 * The weight files as the script finds them: `model*.safetensors`, else `pytorch_model*.bin`,
 * sorted by name (or the files of the index's weight map), safetensors tensors sorted by
 * name, torch state dicts in file order.
 */
async function openWeights(folder: string): Promise<{ tensors: TensorSource[]; close(): Promise<void> }> {
  const names = (await readdir(folder)).sort();
  let parts = names.filter((n) => n.startsWith('model') && n.endsWith('.safetensors'));
  const safetensors = parts.length > 0;
  if (!safetensors) parts = names.filter((n) => n.startsWith('pytorch_model') && n.endsWith('.bin'));
  const indexName = safetensors ? 'model.safetensors.index.json' : 'pytorch_model.bin.index.json';
  const index = await readJsonIn(folder, indexName);
  let weightMap: Record<string, unknown> | undefined;
  if (index !== undefined) {
    weightMap = isObject(index) && isObject(index.weight_map) ? index.weight_map : undefined;
    if (!weightMap) throw new ModelLoadError('ERR_MODEL_LOAD', `${join(folder, indexName)} has no "weight_map" object`);
    parts = [...new Set(Object.values(weightMap).map(String))].sort();
  }
  if (parts.length === 0) {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${folder} holds no weights: expected model*.safetensors or pytorch_model*.bin files`);
  }
  const closers: (() => Promise<void>)[] = [];
  const close = async (): Promise<void> => { for (const c of closers.splice(0)) await c(); };
  try {
    const tensors: TensorSource[] = [];
    for (const part of parts) {
      const file = join(folder, part);
      if (safetensors) {
        const list = await openSafetensors(file);
        tensors.push(...list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)));
      } else {
        const ckpt = await openTorchCheckpoint(file);
        closers.push(() => ckpt.close());
        tensors.push(...ckpt.tensors);
      }
    }
    if (weightMap) {
      const inParts = new Set(tensors.map((t) => t.name));
      const missing = Object.keys(weightMap).filter((n) => !inParts.has(n)).sort();
      const extra = [...inParts].filter((n) => !Object.hasOwn(weightMap!, n)).sort();
      if (missing.length > 0 || extra.length > 0) {
        throw new ModelLoadError('ERR_MODEL_LOAD', `${indexName} does not match the shards (incomplete download?): ` +
          `${missing.length > 0 ? `missing tensors ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}` : ''}` +
          `${missing.length > 0 && extra.length > 0 ? '; ' : ''}${extra.length > 0 ? `tensors not in the index ${extra.slice(0, 5).join(', ')}` : ''}`);
      }
    }
    return { tensors, close };
  } catch (err) {
    await close();
    throw err;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

type Validated = Required<Pick<ConvertLlamaOptions, 'input' | 'output' | 'type'>> & Omit<ConvertLlamaOptions, 'input' | 'output' | 'type'>;

function validate(options: ConvertLlamaOptions): Validated {
  const o = checkKeys(options, OPTION_KEYS, 'convertLlama options');
  const input = optString(o, 'input');
  if (!input) throw invalid('a non-empty string', 'input', o.input);
  const output = optString(o, 'output');
  if (!output) throw invalid('a non-empty string', 'output', o.output);
  if (o.type !== undefined && !TYPES.includes(o.type as LlamaOutType)) throw invalid(`one of ${TYPES.map((t) => `'${t}'`).join(', ')}`, 'type', o.type);
  return {
    input, output,
    type: (o.type as LlamaOutType | undefined) ?? 'f16',
    name: optString(o, 'name'),
    onProgress: optFunction<(done: number, total: number) => void>(o, 'onProgress'),
    signal: optSignal(o),
  };
}
