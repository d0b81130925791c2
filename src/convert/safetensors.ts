/**
 * Reader for Hugging Face `.safetensors` files and sharded checkpoints
 * (`model.safetensors.index.json`). Only the JSON header is read up front; each tensor's
 * bytes are read when its {@link TensorSource.read} is called.
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON mapping each name to
 * `{ dtype, shape, data_offsets: [begin, end] }` (offsets relative to the byte after the
 * header), then the raw little-endian data.
 * @module
 */
import { open, readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { decodeValues, DTYPE_SIZE, isDecodable, numel, refuseDtype, type TensorSource } from './source.js';
import { loadError, readExactly, readFileRange } from './file-range.js';

// Header limit from the safetensors reference implementation (100 MB).
const MAX_HEADER = 100_000_000;

// safetensors dtype names, and the ones we can decode.
const KNOWN_DTYPES = new Set(['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64']);

const bad = (path: string, why: string): ModelLoadError =>
  new ModelLoadError('ERR_MODEL_LOAD', `${path} is not a valid safetensors file: ${why}`);

/**
 * List the tensors of one `.safetensors` file without reading their data.
 * Rejects with a `ModelLoadError` (`ERR_MODEL_LOAD`) naming the file when the header is malformed.
 */
export async function openSafetensors(path: string): Promise<TensorSource[]> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw loadError(path, err);
  }
  let header: Record<string, unknown>;
  let dataStart: number;
  let fileSize: number;
  try {
    fileSize = (await fh.stat()).size;
    if (fileSize < 8) throw bad(path, 'shorter than its 8-byte header length');
    const lenBytes = await readExactly(fh, 0, 8, path);
    const len = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (len > BigInt(Math.min(MAX_HEADER, fileSize - 8))) throw bad(path, `header length ${len} does not fit the file`);
    const json = await readExactly(fh, 8, Number(len), path);
    dataStart = 8 + Number(len);
    try {
      header = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.length).toString('utf8'));
    } catch (err) {
      throw bad(path, `its header is not JSON (${(err as Error).message})`);
    }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) throw bad(path, 'its header is not a JSON object');
  } finally {
    await fh.close();
  }

  const out: TensorSource[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const t = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t?.dtype !== 'string' || !KNOWN_DTYPES.has(t.dtype)) throw bad(path, `tensor "${name}" has an unknown dtype ${JSON.stringify(t?.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(path, `tensor "${name}" has an invalid shape`);
    const offsets = t.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]) {
      throw bad(path, `tensor "${name}" has invalid data_offsets`);
    }
    const [begin, end] = offsets as [number, number];
    if (dataStart + end > fileSize) throw bad(path, `tensor "${name}" lies past the end of the file (truncated download?)`);
    const shape = t.shape as number[];
    const dtype = t.dtype;
    if (isDecodable(dtype) && end - begin !== numel(shape) * DTYPE_SIZE[dtype]) {
      throw bad(path, `tensor "${name}" holds ${end - begin} bytes, but ${dtype} [${shape.join(', ')}] needs ${numel(shape) * DTYPE_SIZE[dtype]}`);
    }
    out.push({
      name, shape, dtype, file: path,
      read: async () => {
        if (!isDecodable(dtype)) refuseDtype(name, dtype, path);
        return decodeValues(dtype, await readFileRange(path, dataStart + begin, end - begin));
      },
      readRaw: () => readFileRange(path, dataStart + begin, end - begin),
      rawFileRange: async () => ({ path, offset: dataStart + begin }),
    });
  }
  return out;
}

/**
 * List the tensors of a sharded checkpoint from its index (`model.safetensors.index.json`,
 * `{ "weight_map": { name: shard file } }`); shards are resolved next to the index.
 * Every tensor named in the weight map must be in its shard.
 */
export async function openSafetensorsIndex(indexPath: string): Promise<TensorSource[]> {
  let index: { weight_map?: Record<string, unknown> };
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (err) {
    if (err instanceof SyntaxError) throw new ModelLoadError('ERR_MODEL_LOAD', `${indexPath} is not JSON: ${err.message}`);
    throw loadError(indexPath, err);
  }
  const map = index?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${indexPath} has no "weight_map" object`);
  }
  const byShard = new Map<string, Set<string>>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string') throw new ModelLoadError('ERR_MODEL_LOAD', `${indexPath}: weight_map["${name}"] is not a file name`);
    const file = resolve(dirname(indexPath), shard);
    if (!byShard.has(file)) byShard.set(file, new Set());
    byShard.get(file)!.add(name);
  }
  const out: TensorSource[] = [];
  for (const [file, names] of byShard) {
    await stat(file).catch((err) => { throw loadError(file, err); });
    const tensors = await openSafetensors(file);
    const found = new Set(tensors.map((t) => t.name));
    for (const name of names) {
      if (!found.has(name)) throw new ModelLoadError('ERR_MODEL_LOAD', `${indexPath} puts tensor "${name}" in ${file}, which does not hold it`);
    }
    out.push(...tensors.filter((t) => names.has(t.name)));
  }
  return out;
}
