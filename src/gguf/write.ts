import { open, rm } from 'node:fs/promises';
import { encodeTensorData, WRITABLE_TYPES } from './quant.js';
import { GgmlType, GgufValueType, ggmlTypeName, tensorByteSize, type GgufMetadataEntry, type GgufScalar } from './types.js';

export { kv } from './kv.js';
export { f32ToF16, f16ToF32 } from './f16.js';

/** One tensor to write. */
export interface TensorSpec {
  name: string;
  /** F32, F16, Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 (quantized with ggml's reference quantizers). */
  type: GgmlType;
  /** ggml `ne` order: shape[0] is the innermost (contiguous) dimension. */
  shape: number[];
  /** The values in ggml order, or a function producing them when the tensor is written (keeps only one tensor in memory). */
  data: Float32Array | (() => Float32Array | Promise<Float32Array>);
}

/** What {@link writeGguf} writes. */
export interface GgufSpec {
  metadata: GgufMetadataEntry[];
  tensors: TensorSpec[];
  /** Data alignment; written as general.alignment when given. Default 32 (GGUF's default). */
  alignment?: number;
}

const GGUF_VERSION = 3;
const MAX_NAME_BYTES = 63;
const ENCODE_SLICE = 1 << 20; // values encoded per write; a multiple of every block size

/**
 * Write a GGUF v3 file. The header is built in memory; tensors are then produced,
 * encoded and written one at a time in slices, so the file can be far larger than
 * memory. On failure the partial file is removed.
 */
export async function writeGguf(path: string, spec: GgufSpec): Promise<void> {
  const { metadata, alignment } = withAlignment(spec);
  const layout = layoutTensors(spec.tensors, alignment);
  const header = encodeHeader(metadata, spec.tensors, layout.offsets);

  const fh = await open(path, 'w');
  let ok = false;
  try {
    let pos = 0;
    const write = async (bytes: Uint8Array): Promise<void> => {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, pos + done);
        done += bytesWritten;
      }
      pos += bytes.length;
    };
    const pad = async (): Promise<void> => {
      const n = (alignment - (pos % alignment)) % alignment;
      if (n > 0) await write(new Uint8Array(n));
    };
    await write(header);
    if (spec.tensors.length > 0) await pad(); // llama.cpp aligns the data section only when there are tensors
    let scratch = new Uint8Array(0);
    for (const [i, t] of spec.tensors.entries()) {
      const values = typeof t.data === 'function' ? await t.data() : t.data;
      const count = layout.elements[i];
      if (!(values instanceof Float32Array) || values.length !== count) {
        throw new RangeError(`tensor "${t.name}": expected a Float32Array of ${count} values for shape [${t.shape.join(', ')}], got ${values instanceof Float32Array ? values.length : typeof values}`);
      }
      for (let start = 0; start < count; start += ENCODE_SLICE) {
        const slice = values.subarray(start, Math.min(count, start + ENCODE_SLICE));
        const need = tensorByteSize(t.type, [slice.length]);
        if (scratch.length < need) scratch = new Uint8Array(need);
        encodeTensorData(t.type, slice, scratch, 0);
        await write(scratch.subarray(0, need));
      }
      await pad();
    }
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await rm(path, { force: true });
  }
}

function withAlignment(spec: GgufSpec): { metadata: GgufMetadataEntry[]; alignment: number } {
  const existing = spec.metadata.find((e) => e.key === 'general.alignment');
  const fromMeta = existing && existing.type === GgufValueType.UINT32 ? (existing.value as number) : undefined;
  if (existing && fromMeta === undefined) throw new TypeError('general.alignment must be a uint32 (use kv.u32)');
  if (spec.alignment !== undefined && fromMeta !== undefined && spec.alignment !== fromMeta) {
    throw new RangeError(`alignment ${spec.alignment} disagrees with general.alignment ${fromMeta}`);
  }
  const alignment = spec.alignment ?? fromMeta ?? 32;
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0 || alignment > 0x80000000) {
    throw new RangeError(`alignment must be a power of two, got ${alignment}`);
  }
  const metadata = spec.alignment !== undefined && !existing
    ? [...spec.metadata, { key: 'general.alignment', type: GgufValueType.UINT32, value: alignment }]
    : spec.metadata;
  return { metadata, alignment };
}

/** Name, type and shape of a tensor whose bytes the caller encodes itself. */
export type TensorLayout = Pick<TensorSpec, 'name' | 'type' | 'shape'>;

/**
 * @internal
 * The header (magic, key-value pairs, tensor infos) of a GGUF whose tensors the caller
 * writes itself, already encoded in any ggml type: after `bytes` come zero bytes up to
 * `dataStart`, then each tensor's `sizes[i]` bytes at `dataStart + offsets[i]`, each
 * padded with zeros to `alignment`. Same layout as {@link writeGguf}.
 */
export function encodeGgufHeader(metadata: GgufMetadataEntry[], tensors: TensorLayout[], alignment?: number): {
  bytes: Uint8Array; dataStart: number; offsets: number[]; sizes: number[]; alignment: number;
} {
  const m = withAlignment({ metadata, tensors: [], alignment });
  const layout = layoutTensors(tensors, m.alignment, true);
  const bytes = encodeHeader(m.metadata, tensors, layout.offsets);
  const dataStart = tensors.length > 0 ? Math.ceil(bytes.length / m.alignment) * m.alignment : bytes.length;
  return { bytes, dataStart, offsets: layout.offsets.map(Number), sizes: layout.sizes, alignment: m.alignment };
}

function layoutTensors(tensors: TensorLayout[], alignment: number, anyType = false): { offsets: bigint[]; elements: number[]; sizes: number[] } {
  const names = new Set<string>();
  const offsets: bigint[] = [];
  const elements: number[] = [];
  const sizes: number[] = [];
  let offset = 0n;
  for (const t of tensors) {
    if (t.name.length === 0 || Buffer.byteLength(t.name) > MAX_NAME_BYTES) throw new RangeError(`tensor name "${t.name}" must be 1..${MAX_NAME_BYTES} bytes`);
    if (names.has(t.name)) throw new RangeError(`duplicate tensor name "${t.name}"`);
    names.add(t.name);
    if (!anyType && !WRITABLE_TYPES.has(t.type)) throw new RangeError(`tensor "${t.name}": cannot write type ${ggmlTypeName(t.type)}`);
    if (t.shape.length < 1 || t.shape.length > 4 || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new RangeError(`tensor "${t.name}": shape must have 1..4 non-negative integer dimensions, got [${t.shape.join(', ')}]`);
    }
    const bytes = tensorByteSize(t.type, t.shape); // also checks whole blocks per row
    offsets.push(offset);
    sizes.push(bytes);
    elements.push(t.shape.reduce((a, b) => a * b, 1));
    const a = BigInt(alignment);
    offset += ((BigInt(bytes) + a - 1n) / a) * a;
  }
  return { offsets, elements, sizes };
}

/** Growable little-endian byte sink for the header. */
class ByteSink {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < this.length + n) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  // reserve() may swap the buffer, so it must run before this.view is read.
  u8(v: number) { const at = this.reserve(1); this.view.setUint8(at, v); }
  i8(v: number) { const at = this.reserve(1); this.view.setInt8(at, v); }
  u16(v: number) { const at = this.reserve(2); this.view.setUint16(at, v, true); }
  i16(v: number) { const at = this.reserve(2); this.view.setInt16(at, v, true); }
  u32(v: number) { const at = this.reserve(4); this.view.setUint32(at, v, true); }
  i32(v: number) { const at = this.reserve(4); this.view.setInt32(at, v, true); }
  f32(v: number) { const at = this.reserve(4); this.view.setFloat32(at, v, true); }
  f64(v: number) { const at = this.reserve(8); this.view.setFloat64(at, v, true); }
  u64(v: bigint) { const at = this.reserve(8); this.view.setBigUint64(at, v, true); }
  i64(v: bigint) { const at = this.reserve(8); this.view.setBigInt64(at, v, true); }
  str(s: string) {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(BigInt(bytes.length));
    const at = this.reserve(bytes.length);
    this.buf.set(bytes, at);
  }
  bytes(): Uint8Array { return this.buf.subarray(0, this.length); }
}

const INT_RANGE: Partial<Record<GgufValueType, [number, number]>> = {
  [GgufValueType.UINT8]: [0, 0xff],
  [GgufValueType.INT8]: [-0x80, 0x7f],
  [GgufValueType.UINT16]: [0, 0xffff],
  [GgufValueType.INT16]: [-0x8000, 0x7fff],
  [GgufValueType.UINT32]: [0, 0xffffffff],
  [GgufValueType.INT32]: [-0x80000000, 0x7fffffff],
};

function writeScalar(out: ByteSink, type: GgufValueType, v: GgufScalar, key: string): void {
  const bad = (): never => {
    throw new TypeError(`metadata "${key}": ${String(v)} is not a valid ${GgufValueType[type] ?? type}`);
  };
  const range = INT_RANGE[type];
  if (range) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < range[0] || v > range[1]) bad();
  }
  switch (type) {
    case GgufValueType.UINT8: return out.u8(v as number);
    case GgufValueType.INT8: return out.i8(v as number);
    case GgufValueType.UINT16: return out.u16(v as number);
    case GgufValueType.INT16: return out.i16(v as number);
    case GgufValueType.UINT32: return out.u32(v as number);
    case GgufValueType.INT32: return out.i32(v as number);
    case GgufValueType.FLOAT32:
    case GgufValueType.FLOAT64:
      if (typeof v !== 'number') bad();
      return type === GgufValueType.FLOAT32 ? out.f32(v as number) : out.f64(v as number);
    case GgufValueType.BOOL:
      if (typeof v !== 'boolean') bad();
      return out.u8(v ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof v !== 'string') bad();
      return out.str(v as string);
    case GgufValueType.UINT64:
    case GgufValueType.INT64: {
      if (typeof v === 'number' && !Number.isSafeInteger(v)) bad();
      if (typeof v !== 'number' && typeof v !== 'bigint') bad();
      const big = BigInt(v as number | bigint);
      if (type === GgufValueType.UINT64 ? big < 0n || big >= 1n << 64n : big < -(1n << 63n) || big >= 1n << 63n) bad();
      return type === GgufValueType.UINT64 ? out.u64(big) : out.i64(big);
    }
    default:
      bad();
  }
}

function encodeHeader(metadata: GgufMetadataEntry[], tensors: TensorLayout[], offsets: bigint[]): Uint8Array {
  const out = new ByteSink();
  out.u32(0x46554747); // "GGUF"
  out.u32(GGUF_VERSION);
  out.i64(BigInt(tensors.length));
  out.i64(BigInt(metadata.length));
  const keys = new Set<string>();
  for (const e of metadata) {
    if (e.key.length === 0) throw new TypeError('metadata keys must not be empty');
    if (keys.has(e.key)) throw new TypeError(`duplicate metadata key "${e.key}"`);
    keys.add(e.key);
    out.str(e.key);
    out.i32(e.type);
    if (e.type === GgufValueType.ARRAY) {
      const at = e.arrayType;
      if (at === undefined || at === GgufValueType.ARRAY || !Array.isArray(e.value)) {
        throw new TypeError(`metadata "${e.key}": an ARRAY entry needs an array value and a scalar arrayType`);
      }
      out.i32(at);
      out.u64(BigInt(e.value.length));
      for (const v of e.value) writeScalar(out, at, v, e.key);
    } else {
      if (Array.isArray(e.value)) throw new TypeError(`metadata "${e.key}": array value given for scalar type ${GgufValueType[e.type]}`);
      writeScalar(out, e.type, e.value, e.key);
    }
  }
  for (const [i, t] of tensors.entries()) {
    out.str(t.name);
    out.u32(t.shape.length);
    for (const d of t.shape) out.i64(BigInt(d));
    out.i32(t.type);
    out.u64(offsets[i]);
  }
  return out.bytes();
}
