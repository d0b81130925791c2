/**
 * Reader for PyTorch checkpoints written by `torch.save` (the zip format of PyTorch >= 1.6:
 * `<archive>/data.pkl` plus one `<archive>/data/<key>` entry per storage), without Python.
 * The pickle is interpreted by our data-only unpickler, which knows only the handful of
 * globals a state dict uses and refuses everything else, so loading a checkpoint never
 * runs code from it. Tensor data stays on disk until read.
 * @module
 */
import { open } from 'node:fs/promises';
import { ModelLoadError } from '../errors.js';
import { unpickle, PickleError, type PickleCallable } from './pickle.js';
import { decodeValues, isDecodable, numel, refuseDtype, type TensorSource } from './source.js';
import { ZipArchive, type ZipEntry } from './zip.js';
import { loadError } from './file-range.js';

/** An open checkpoint: its tensors (state dict order) and the archive they are read from. */
export interface TorchCheckpoint {
  readonly path: string;
  readonly tensors: TensorSource[];
  /** Closes the archive; reading a tensor afterwards fails. */
  close(): Promise<void>;
}

// Storage classes torch pickles by name, with the element type they hold.
const STORAGE_DTYPES: Record<string, { dtype: string; size: number }> = {
  FloatStorage: { dtype: 'F32', size: 4 },
  HalfStorage: { dtype: 'F16', size: 2 },
  BFloat16Storage: { dtype: 'BF16', size: 2 },
  DoubleStorage: { dtype: 'F64', size: 8 },
  // Integer buffers (position_ids, step counters) appear in real state dicts: they must
  // parse, even though only floating tensors can be converted.
  LongStorage: { dtype: 'I64', size: 8 },
  IntStorage: { dtype: 'I32', size: 4 },
  ShortStorage: { dtype: 'I16', size: 2 },
  CharStorage: { dtype: 'I8', size: 1 },
  ByteStorage: { dtype: 'U8', size: 1 },
  BoolStorage: { dtype: 'BOOL', size: 1 },
};

class StorageType {
  constructor(readonly name: string, readonly dtype: string, readonly size: number) {}
}

class StorageRef {
  constructor(readonly type: StorageType, readonly key: string, readonly numel: number) {}
}

/** What `_rebuild_tensor_v2` describes: a strided view of a storage. */
class TensorRef {
  constructor(readonly storage: StorageRef, readonly offset: number, readonly shape: number[], readonly stride: number[]) {}
}

const callable = (qualifiedName: string, call: (args: unknown[]) => unknown): PickleCallable => ({ qualifiedName, call });

function rebuildTensor(qualifiedName: string) {
  return callable(qualifiedName, (args) => {
    const [storage, offset, size, stride] = args;
    const ints = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && (x as number) >= 0);
    if (!(storage instanceof StorageRef) || !Number.isSafeInteger(offset) || !ints(size) || !ints(stride) || size.length !== stride.length) {
      throw new PickleError(`${qualifiedName} got arguments it does not expect`);
    }
    return new TensorRef(storage, offset as number, size, stride);
  });
}

const GLOBALS: Record<string, unknown> = {
  'collections.OrderedDict': callable('collections.OrderedDict', (args) => {
    const m = new Map();
    if (Array.isArray(args[0])) for (const pair of args[0]) if (Array.isArray(pair)) m.set(pair[0], pair[1]);
    return m;
  }),
  'torch._utils._rebuild_tensor_v2': rebuildTensor('torch._utils._rebuild_tensor_v2'),
  'torch._utils._rebuild_tensor': rebuildTensor('torch._utils._rebuild_tensor'),
  // nn.Parameter(data, requires_grad, hooks): only the data matters here.
  'torch._utils._rebuild_parameter': callable('torch._utils._rebuild_parameter', (args) => args[0]),
};
for (const [name, t] of Object.entries(STORAGE_DTYPES)) GLOBALS[`torch.${name}`] = new StorageType(name, t.dtype, t.size);

function resolveGlobal(module: string, name: string): unknown {
  const found = GLOBALS[`${module}.${name}`];
  if (found === undefined) {
    throw new PickleError(`it refers to the Python object ${module}.${name}, which a state dict of tensors does not need; ` +
      'only tensors, dicts, lists and numbers can be read (nothing in a checkpoint is executed)');
  }
  return found;
}

function persistentLoad(pid: unknown): StorageRef {
  // ('storage', storage_type, key, location, numel)
  if (!Array.isArray(pid) || pid[0] !== 'storage' || !(pid[1] instanceof StorageType) || typeof pid[2] !== 'string' || !Number.isSafeInteger(pid[4])) {
    throw new PickleError(`unsupported persistent id ${JSON.stringify(pid, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`);
  }
  return new StorageRef(pid[1], pid[2], pid[4] as number);
}

/**
 * Open a `torch.save` checkpoint and list the tensors of its state dict. When the pickled
 * object is a dict with a `model` (LAVIS, MiniGPT-4) or `state_dict` entry that is itself a
 * dict, that inner dict is the state dict. Only tensor-valued entries are listed.
 * Rejects with a `ModelLoadError` (`ERR_MODEL_LOAD`) naming the file for anything else.
 */
export async function openTorchCheckpoint(path: string): Promise<TorchCheckpoint> {
  await refuseNonZip(path);
  const zip = await ZipArchive.open(path);
  try {
    const pkl = [...zip.entries.values()].find((e) => /^[^/]+\/data\.pkl$/.test(e.name));
    if (!pkl) throw new ModelLoadError('ERR_MODEL_LOAD', `${path} is a zip archive without <name>/data.pkl, so not a torch.save checkpoint`);
    const prefix = pkl.name.slice(0, -'data.pkl'.length);
    const byteorder = zip.entries.get(`${prefix}byteorder`);
    if (byteorder && Buffer.from(await zip.read(byteorder)).toString('latin1') !== 'little') {
      throw new ModelLoadError('ERR_MODEL_LOAD', `${path} was saved on a big-endian machine; only little-endian checkpoints are supported`);
    }
    let root: unknown;
    try {
      root = unpickle(await zip.read(pkl), { resolveGlobal, persistentLoad });
    } catch (err) {
      if (err instanceof PickleError) throw new ModelLoadError('ERR_MODEL_LOAD', `cannot read ${path}: ${err.message}`);
      throw err;
    }
    const tensors = stateDictTensors(root, path, prefix, zip);
    if (tensors.length === 0) throw new ModelLoadError('ERR_MODEL_LOAD', `${path} holds no tensors`);
    return { path, tensors, close: () => zip.close() };
  } catch (err) {
    await zip.close();
    throw err;
  }
}

async function refuseNonZip(path: string): Promise<void> {
  let head: Uint8Array;
  try {
    const fh = await open(path, 'r');
    try {
      head = new Uint8Array(4);
      await fh.read(head, 0, 4, 0);
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw loadError(path, err);
  }
  if (!(head[0] === 0x50 && head[1] === 0x4b)) {
    const legacy = head[0] === 0x80 && head[1] === 0x02; // pickle protocol 2 at offset 0: torch's pre-1.6 format
    throw new ModelLoadError('ERR_MODEL_LOAD', legacy
      ? `${path} uses the legacy (pre-PyTorch 1.6) serialization; re-save it with a recent torch.save`
      : `${path} is not a torch.save zip checkpoint`);
  }
}

function stateDictTensors(root: unknown, path: string, prefix: string, zip: ZipArchive): TensorSource[] {
  let dict = root;
  if (dict instanceof Map) {
    for (const k of ['model', 'state_dict']) {
      if (dict.get(k) instanceof Map) { dict = dict.get(k); break; }
    }
  }
  if (!(dict instanceof Map)) throw new ModelLoadError('ERR_MODEL_LOAD', `${path} does not hold a dict of tensors`);
  const out: TensorSource[] = [];
  for (const [name, value] of dict) {
    if (typeof name !== 'string' || !(value instanceof TensorRef)) continue;
    const entry = zip.entries.get(`${prefix}data/${value.storage.key}`);
    if (!entry) throw new ModelLoadError('ERR_MODEL_LOAD', `${path}: tensor "${name}" refers to storage ${value.storage.key}, which is not in the archive`);
    checkBounds(name, value, entry, path);
    out.push({
      name, shape: value.shape, dtype: value.storage.type.dtype, file: path,
      read: () => readTensor(name, value, entry, zip, path),
      // Strided views (rare in saved state dicts) go through read(), which gathers them.
      readRaw: isContiguous(value.shape, value.stride)
        ? () => zip.read(entry, value.offset * value.storage.type.size, numel(value.shape) * value.storage.type.size)
        : undefined,
      rawFileRange: isContiguous(value.shape, value.stride)
        ? async () => {
          const start = await zip.storedDataOffset(entry);
          return start === undefined ? undefined : { path, offset: start + value.offset * value.storage.type.size };
        }
        : undefined,
    });
  }
  return out;
}

function checkBounds(name: string, t: TensorRef, entry: ZipEntry, path: string): void {
  const { size } = t.storage.type;
  if (t.storage.numel * size > entry.size) {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${path}: storage ${t.storage.key} of tensor "${name}" needs ${t.storage.numel * size} bytes but holds ${entry.size}`);
  }
  const last = numel(t.shape) === 0 ? t.offset : t.offset + t.shape.reduce((a, d, i) => a + (d - 1) * t.stride[i], 0);
  if (last >= Math.max(t.storage.numel, 1) && numel(t.shape) > 0) {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${path}: tensor "${name}" reaches past the end of its storage`);
  }
}

async function readTensor(name: string, t: TensorRef, entry: ZipEntry, zip: ZipArchive, path: string): Promise<Float32Array> {
  const dtype = t.storage.type.dtype;
  if (!isDecodable(dtype)) refuseDtype(name, dtype, path);
  const es = t.storage.type.size;
  const n = numel(t.shape);
  if (n === 0) return new Float32Array(0);
  // Elements spanned by the view; for a contiguous tensor that is exactly n.
  const span = 1 + t.shape.reduce((a, d, i) => a + (d - 1) * t.stride[i], 0);
  const values = decodeValues(dtype, await zip.read(entry, t.offset * es, span * es));
  return isContiguous(t.shape, t.stride) ? values : gather(values, t.shape, t.stride);
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expected) return false; // size-1 dims may have any stride
    expected *= shape[i];
  }
  return true;
}

// Copy a strided view (transposed, sliced, expanded) into row-major order.
function gather(src: Float32Array, shape: number[], stride: number[]): Float32Array {
  const out = new Float32Array(numel(shape));
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  let at = 0;
  for (let i = 0; i < out.length; i++) {
    out[i] = src[at];
    for (let d = rank - 1; d >= 0; d--) {
      index[d]++;
      at += stride[d];
      if (index[d] < shape[d]) break;
      at -= stride[d] * shape[d];
      index[d] = 0;
    }
  }
  return out;
}
