import { open, stat } from 'node:fs/promises';
import { HeaderCursor } from './cursor.js';
import { GgufFormatError } from './format-error.js';
import { GGUF_MAGIC, describeForeignFile, showMagic } from './magic.js';
import {
  GgufValueType,
  ggmlTypeName,
  ggmlTypeTraits,
  type GgmlType,
  type GgufHeader,
  type GgufMetadataEntry,
  type GgufScalar,
  type GgufTensorInfo,
} from './types.js';

export { GgufFormatError, type GgufFormatErrorReason } from './format-error.js';

/** Options for {@link readGgufHeader}. */
export interface ReadGgufHeaderOptions {
  /** Refuse headers (metadata plus tensor table) larger than this many bytes. Default 256 MiB. */
  maxMetadataBytes?: number;
}

// Limits taken from llama.cpp's gguf.cpp so that we refuse what it refuses.
const MAX_STRING_LENGTH = 1024 * 1024 * 1024;
const MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024;
const MAX_NAME_LENGTH = 63; // GGML_MAX_NAME - 1 for the terminating NUL
const MAX_DIMS = 4;
const DEFAULT_ALIGNMENT = 32;
const DEFAULT_MAX_METADATA_BYTES = 256 * 1024 * 1024;

const SCALAR_SIZE: Partial<Record<GgufValueType, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

/**
 * Read the header of a GGUF file (metadata and tensor table), never the tensor data.
 *
 * The file is read in chunks through one FileHandle, and every count and length is
 * checked against what is left of the file before anything is allocated, so corrupt
 * or hostile files fail with a {@link GgufFormatError} rather than exhausting memory.
 * Accepts GGUF versions 2 and 3, little-endian. A missing file rejects with the
 * original `ENOENT` error from `fs`.
 */
export async function readGgufHeader(path: string, options: ReadGgufHeaderOptions = {}): Promise<GgufHeader> {
  const st = await stat(path); // before open(): opening a FIFO would block
  if (!st.isFile()) {
    const kind = st.isDirectory() ? 'a directory' : 'not a regular file';
    throw new GgufFormatError('not-a-file', path, `${path} is ${kind}; pass the path of a .gguf model file.`);
  }
  const fh = await open(path, 'r');
  try {
    const opened = await fh.stat();
    const budget = options.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES;
    const cur = new HeaderCursor(fh, path, opened.size, budget);
    return { ...(await parseHeader(cur)), fileId: `${opened.dev}:${opened.ino}` };
  } finally {
    await fh.close();
  }
}

async function parseHeader(cur: HeaderCursor): Promise<GgufHeader> {
  const { path, fileSize } = cur;
  if (fileSize === 0) {
    throw new GgufFormatError('empty', path, `${path} is empty (0 bytes): the download or copy did not finish. Download the model again.`);
  }
  await checkMagic(cur);
  const version = await readVersion(cur);

  await cur.need(16, 'the tensor and metadata counts');
  const nTensors = checkCount(cur, cur.i64(), 'tensors');
  const nKv = checkCount(cur, cur.i64(), 'metadata entries');

  const metadata = new Map<string, GgufMetadataEntry>();
  for (let i = 0; i < nKv; i++) {
    const entry = await readEntry(cur, i);
    if (metadata.has(entry.key)) fail(cur, 'bad-key', `metadata key "${entry.key}" appears twice`);
    metadata.set(entry.key, entry);
  }
  const alignment = checkAlignment(cur, metadata.get('general.alignment'));

  const tensors: GgufTensorInfo[] = [];
  const tensorsByName = new Map<string, GgufTensorInfo>();
  for (let i = 0; i < nTensors; i++) {
    const t = await readTensorInfo(cur, i);
    if (tensorsByName.has(t.name)) fail(cur, 'bad-tensor', `tensor "${t.name}" appears twice`);
    tensors.push(t);
    tensorsByName.set(t.name, t);
  }

  // llama.cpp pads to the alignment only when there are tensors.
  const dataOffset = nTensors > 0 ? alignUp(cur.pos, alignment) : cur.pos;
  checkTensorPlacement(cur, tensors, dataOffset, alignment);
  return { version, metadata, tensors, tensorsByName, alignment, dataOffset, fileSize };
}

function fail(cur: HeaderCursor, reason: GgufFormatError['reason'], what: string, advice = 'The file is corrupt: download or convert it again.'): never {
  throw new GgufFormatError(reason, cur.path, `${cur.path}: ${what}. ${advice}`);
}

async function checkMagic(cur: HeaderCursor): Promise<void> {
  const n = Math.min(cur.fileSize, 64); // enough to recognise the usual wrong files
  await cur.need(n, 'the file magic');
  const head = cur.peek(n);
  if (n >= 4 && head.readUInt32LE(0) === GGUF_MAGIC) {
    cur.pos += 4;
    return;
  }
  if (n < 4 && Buffer.from('GGUF').subarray(0, n).equals(head)) {
    fail(cur, 'truncated', `the file is only ${n} bytes long`, 'It was cut short: download it again.');
  }
  throw new GgufFormatError(
    'bad-magic',
    cur.path,
    `${cur.path} is not a GGUF file (it starts with "${showMagic(head)}", not "GGUF"). ${describeForeignFile(head)}`,
  );
}

async function readVersion(cur: HeaderCursor): Promise<number> {
  await cur.need(4, 'the GGUF version');
  const version = cur.u32();
  if (version === 2 || version === 3) return version;
  let why: string;
  if (version !== 0 && (version & 0xffff) === 0) {
    why = `it is a big-endian GGUF (version field reads ${version >>> 16} byte-swapped), which this little-endian build cannot load; get the little-endian file`;
  } else if (version === 1) {
    why = 'GGUF version 1 is no longer supported by llama.cpp; get a newer conversion of the model';
  } else if (version > 3) {
    why = `GGUF version ${version} is newer than this llama.cpp understands (2 and 3); update minigpt-node`;
  } else {
    why = `GGUF version ${version} is not valid; the file is corrupt`;
  }
  throw new GgufFormatError('unsupported-version', cur.path, `${cur.path}: ${why}.`);
}

function checkCount(cur: HeaderCursor, n: bigint, what: string): number {
  if (n < 0n || n > BigInt(MAX_ARRAY_ELEMENTS)) {
    fail(cur, 'bad-count', `the header declares ${n} ${what}, which is impossible`);
  }
  return Number(n);
}

/** Reject a declared element count whose minimum encoded size cannot fit in the rest of the file. */
function checkFits(cur: HeaderCursor, n: number, minBytesEach: number, what: string): void {
  if (n * minBytesEach > cur.remaining()) {
    fail(
      cur,
      'truncated',
      `the header declares ${n} ${what}, which need at least ${n * minBytesEach} bytes, but only ${cur.remaining()} bytes follow`,
      'The file is truncated (an incomplete download?) or corrupt: download it again.',
    );
  }
}

async function readString(cur: HeaderCursor, what: string): Promise<string> {
  await cur.need(8, `the length of ${what}`);
  const len = cur.u64();
  if (len > BigInt(MAX_STRING_LENGTH)) fail(cur, 'bad-string', `${what} claims to be ${len} bytes long`);
  const n = Number(len);
  if (n > cur.remaining()) {
    fail(cur, 'truncated', `${what} is ${n} bytes long but only ${cur.remaining()} bytes follow`, 'The file is truncated or corrupt: download it again.');
  }
  await cur.need(n, what);
  return cur.utf8(n);
}

function checkValueType(cur: HeaderCursor, t: number, key: string, inArray: boolean): GgufValueType {
  const ok = Number.isInteger(t) && t >= 0 && t <= GgufValueType.FLOAT64 && !(inArray && t === GgufValueType.ARRAY);
  if (!ok) {
    fail(cur, 'bad-type', `metadata key "${key}" has ${inArray ? 'array element' : 'value'} type ${t}, which GGUF does not define${inArray && t === GgufValueType.ARRAY ? ' inside an array' : ''}`,
      'The file is corrupt or was written by an incompatible tool.');
  }
  return t as GgufValueType;
}

async function readEntry(cur: HeaderCursor, index: number): Promise<GgufMetadataEntry> {
  const key = await readString(cur, `metadata key #${index}`);
  if (key.length === 0) fail(cur, 'bad-key', `metadata key #${index} is empty`);
  await cur.need(4, `the type of "${key}"`);
  const type = checkValueType(cur, cur.i32(), key, false);
  if (type !== GgufValueType.ARRAY) {
    return { key, type, value: await readScalar(cur, type, key) };
  }
  await cur.need(12, `the array header of "${key}"`);
  const arrayType = checkValueType(cur, cur.i32(), key, true);
  const n64 = cur.u64();
  if (n64 > BigInt(MAX_ARRAY_ELEMENTS)) fail(cur, 'bad-count', `metadata array "${key}" claims ${n64} elements`);
  const n = Number(n64);
  checkFits(cur, n, arrayType === GgufValueType.STRING ? 8 : SCALAR_SIZE[arrayType]!, `elements in "${key}"`);
  if (arrayType === GgufValueType.STRING) {
    const { values, undecodable } = await readStringArray(cur, n, key);
    return undecodable ? { key, type, arrayType, value: values, undecodable } : { key, type, arrayType, value: values };
  }
  return { key, type, arrayType, value: await readArray(cur, arrayType, n, key) };
}

async function readScalar(cur: HeaderCursor, type: GgufValueType, key: string): Promise<GgufScalar> {
  if (type === GgufValueType.STRING) return readString(cur, `the value of "${key}"`);
  await cur.need(SCALAR_SIZE[type]!, `the value of "${key}"`);
  return readFixed(cur, type);
}

function readFixed(cur: HeaderCursor, type: GgufValueType): GgufScalar {
  switch (type) {
    case GgufValueType.UINT8: return cur.u8();
    case GgufValueType.INT8: return cur.i8();
    case GgufValueType.UINT16: return cur.u16();
    case GgufValueType.INT16: return cur.i16();
    case GgufValueType.UINT32: return cur.u32();
    case GgufValueType.INT32: return cur.i32();
    case GgufValueType.FLOAT32: return cur.f32();
    case GgufValueType.BOOL: return cur.u8() !== 0;
    case GgufValueType.UINT64: return cur.u64();
    case GgufValueType.INT64: return cur.i64();
    case GgufValueType.FLOAT64: return cur.f64();
    default: throw new Error(`readFixed: ${type} is not a fixed-size type`);
  }
}

// Elements whose text holds U+FFFD keep their bytes too: several different invalid sequences
// decode to the same text, and llama.cpp compares vocabulary tokens by their bytes.
async function readStringArray(cur: HeaderCursor, n: number, key: string): Promise<{ values: string[]; undecodable?: Map<number, Buffer> }> {
  const values: string[] = new Array<string>(n);
  let undecodable: Map<number, Buffer> | undefined;
  for (let i = 0; i < n; i++) {
    const s = cur.bufferedString() ?? (await readString(cur, `element ${i} of "${key}"`));
    values[i] = s;
    if (s.includes('\uFFFD')) (undecodable ??= new Map()).set(i, cur.lastStringBytes());
  }
  return { values, undecodable };
}

async function readArray(cur: HeaderCursor, type: GgufValueType, n: number, key: string): Promise<GgufScalar[]> {
  const out: GgufScalar[] = new Array<GgufScalar>(n);
  // Fixed-size elements: one buffer fill per batch instead of one await per element.
  const size = SCALAR_SIZE[type]!;
  const perBatch = Math.max(1, Math.floor((1 << 20) / size));
  for (let i = 0; i < n; ) {
    const m = Math.min(perBatch, n - i);
    await cur.need(m * size, `the elements of "${key}"`);
    for (const end = i + m; i < end; i++) out[i] = readFixed(cur, type);
  }
  return out;
}

function checkAlignment(cur: HeaderCursor, entry: GgufMetadataEntry | undefined): number {
  if (!entry) return DEFAULT_ALIGNMENT;
  if (entry.type !== GgufValueType.UINT32) {
    fail(cur, 'bad-alignment', `general.alignment must be a uint32 but has type ${GgufValueType[entry.type] ?? entry.type}`);
  }
  const a = entry.value as number;
  if (a === 0 || (a & (a - 1)) !== 0) fail(cur, 'bad-alignment', `general.alignment is ${a}, which is not a power of two`);
  return a;
}

async function readTensorInfo(cur: HeaderCursor, index: number): Promise<GgufTensorInfo> {
  const name = await readString(cur, `the name of tensor #${index}`);
  if (name.length > MAX_NAME_LENGTH || Buffer.byteLength(name) > MAX_NAME_LENGTH) {
    fail(cur, 'bad-tensor', `tensor name "${name.slice(0, 80)}" is longer than ggml's ${MAX_NAME_LENGTH}-byte limit`);
  }
  await cur.need(4, `the dimension count of "${name}"`);
  const nDims = cur.u32();
  if (nDims > MAX_DIMS) fail(cur, 'bad-count', `tensor "${name}" has ${nDims} dimensions; ggml allows at most ${MAX_DIMS}`);
  await cur.need(8 * nDims + 4 + 8, `the shape, type and offset of "${name}"`);
  const shape: number[] = [];
  let elements = 1n;
  for (let d = 0; d < nDims; d++) {
    const ne = cur.i64();
    if (ne < 0n || ne > BigInt(Number.MAX_SAFE_INTEGER)) fail(cur, 'bad-tensor', `tensor "${name}" has dimension ${d} of size ${ne}`);
    shape.push(Number(ne));
    elements *= ne;
  }
  const typeId = cur.i32();
  const traits = ggmlTypeTraits(typeId);
  if (!traits) {
    fail(cur, 'bad-type', `tensor "${name}" has ggml type ${typeId}, which this llama.cpp does not know`,
      'The file may need a newer llama.cpp (update minigpt-node), or it is corrupt.');
  }
  const ne0 = shape.length > 0 ? shape[0] : 1;
  if (ne0 % traits.blockSize !== 0) {
    fail(cur, 'bad-tensor', `tensor "${name}" of type ${traits.name} has rows of ${ne0} elements, not a multiple of its block size ${traits.blockSize}`);
  }
  const bytes = (elements / BigInt(traits.blockSize)) * BigInt(traits.typeSize);
  if (bytes > BigInt(cur.fileSize)) {
    fail(cur, 'tensor-out-of-bounds', `tensor "${name}" (${ggmlTypeName(typeId)}, shape [${shape.join(', ')}]) needs ${bytes} bytes, more than the whole ${cur.fileSize}-byte file`,
      'The file is truncated or corrupt: download it again.');
  }
  const offset = cur.u64();
  return { name, type: typeId as GgmlType, shape, offset, byteSize: Number(bytes) };
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

function checkTensorPlacement(cur: HeaderCursor, tensors: GgufTensorInfo[], dataOffset: number, alignment: number): void {
  const fileSize = BigInt(cur.fileSize);
  const base = BigInt(dataOffset);
  const align = BigInt(alignment);
  let expected = 0n;
  for (const t of tensors) {
    const end = base + t.offset + BigInt(t.byteSize);
    if (end > fileSize) {
      fail(cur, 'tensor-out-of-bounds', `tensor "${t.name}" ends at byte ${end} but the file is only ${cur.fileSize} bytes`,
        'The file is truncated (an incomplete download?) or corrupt: download it again.');
    }
    if (t.offset % align !== 0n) {
      fail(cur, 'bad-alignment', `tensor "${t.name}" starts at data offset ${t.offset}, not a multiple of the alignment ${alignment}`);
    }
    // llama.cpp's loader insists the tensors sit back to back, in header order.
    if (t.offset !== expected) {
      fail(cur, 'bad-offset', `tensor "${t.name}" is at data offset ${t.offset} but llama.cpp expects ${expected} (tensors must be stored in header order without gaps)`,
        'Re-write the file with a standard GGUF writer.');
    }
    expected += (BigInt(t.byteSize) + align - 1n) / align * align;
  }
  if (tensors.length > 0 && dataOffset > cur.fileSize) {
    fail(cur, 'truncated', `the tensor data section would start at byte ${dataOffset}, past the end of the ${cur.fileSize}-byte file`,
      'The file is truncated: download it again.');
  }
}
