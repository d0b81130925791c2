/**
 * @internal
 * Opens the converter's inputs: Hugging Face model directories (config.json plus
 * safetensors or pytorch_model.bin weights), single or sharded weight files, and
 * `torch.save` checkpoints, telling the formats apart by their first bytes.
 */
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { loadError } from './file-range.js';
import { openSafetensors, openSafetensorsIndex } from './safetensors.js';
import type { TensorSource } from './source.js';
import { openTorchCheckpoint } from './torch-checkpoint.js';

/** The tensors of every input, in input order (later inputs override earlier ones). */
export interface OpenedInputs {
  readonly tensors: TensorSource[];
  /** A Hugging Face config.json, when one came with the inputs. */
  readonly config?: Record<string, unknown>;
  readonly configPath?: string;
  /** Closes the torch archives. */
  close(): Promise<void>;
}

// In a model directory, the first of these that exists holds the weights.
const WEIGHT_FILES = ['model.safetensors.index.json', 'model.safetensors', 'pytorch_model.bin.index.json', 'pytorch_model.bin'];

/** Open every input path; directories and index files expand to the files they name. */
export async function openInputs(paths: readonly string[]): Promise<OpenedInputs> {
  const tensors: TensorSource[] = [];
  const closers: (() => Promise<void>)[] = [];
  let config: Record<string, unknown> | undefined;
  let configPath: string | undefined;
  const close = async () => { for (const c of closers.splice(0)) await c(); };
  try {
    for (const input of paths) {
      const path = resolve(input);
      const st = await stat(path).catch((err) => { throw loadError(input, err); });
      let files: string[];
      if (st.isDirectory()) {
        const cfg = join(path, 'config.json');
        if (await exists(cfg)) ({ config, configPath } = { config: await readJson(cfg), configPath: cfg });
        files = await weightFilesIn(path);
      } else {
        files = [path];
      }
      for (const file of files) {
        if (file.endsWith('.json')) {
          const json = await readJson(file);
          if (json.weight_map !== undefined) tensors.push(...(await openIndex(file, json, closers)));
          else ({ config, configPath } = { config: json, configPath: file });
        } else if ((await isZip(file)) || /\.(pth|pt|bin|ckpt)$/.test(file)) {
          // Non-zip .pth files get the torch reader's message about the legacy format.
          const ckpt = await openTorchCheckpoint(file);
          closers.push(() => ckpt.close());
          tensors.push(...ckpt.tensors);
        } else {
          tensors.push(...(await openSafetensors(file)));
        }
      }
    }
    return { tensors, config, configPath, close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function weightFilesIn(dir: string): Promise<string[]> {
  for (const name of WEIGHT_FILES) if (await exists(join(dir, name))) return [join(dir, name)];
  const names = (await readdir(dir)).sort();
  const found = names.filter((n) => n.endsWith('.safetensors'));
  if (found.length === 0) found.push(...names.filter((n) => /\.(pth|pt|bin|ckpt)$/.test(n)));
  if (found.length === 0) throw new ModelLoadError('ERR_MODEL_LOAD', `${dir} holds no weights (.safetensors, pytorch_model.bin or .pth files)`);
  return found.map((n) => join(dir, n));
}

// Index files name their shards; safetensors shards go through the safetensors index reader,
// pytorch_model-*.bin shards (torch.save zips) are opened one by one.
async function openIndex(file: string, json: Record<string, unknown>, closers: (() => Promise<void>)[]): Promise<TensorSource[]> {
  const map = json.weight_map as Record<string, string>;
  if (map === null || typeof map !== 'object') throw new ModelLoadError('ERR_MODEL_LOAD', `${file}: "weight_map" is not an object`);
  const shards = [...new Set(Object.values(map))];
  if (shards.every((s) => typeof s === 'string' && s.endsWith('.safetensors'))) return openSafetensorsIndex(file);
  const out: TensorSource[] = [];
  for (const shard of shards) {
    const ckpt = await openTorchCheckpoint(join(dirname(file), String(shard)));
    closers.push(() => ckpt.close());
    out.push(...ckpt.tensors.filter((t) => map[t.name] === shard));
  }
  return out;
}

async function readJson(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw loadError(file, err);
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new SyntaxError('not a JSON object');
    return v;
  } catch (err) {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${basename(file)} is not valid JSON: ${(err as Error).message}`);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

async function isZip(file: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    throw loadError(file, err);
  }
  try {
    const head = new Uint8Array(2);
    await fh.read(head, 0, 2, 0);
    return head[0] === 0x50 && head[1] === 0x4b; // "PK"
  } finally {
    await fh.close();
  }
}
