/**
 * @internal
 * The common currency of the converter's readers: a named tensor whose values are read
 * only when asked for, so that a multi-gigabyte checkpoint never sits in memory at once.
 */
import { f16ToF32 } from '../gguf/f16.js';
import { ModelLoadError } from '../errors.js';

/** Element types the readers can turn into float32. */
export type SourceDtype = 'F32' | 'F16' | 'BF16' | 'F64';

/** One tensor of a checkpoint; its values stay on disk until {@link TensorSource.read}. */
export interface TensorSource {
  /** Name in the checkpoint (`vision_model.embeddings.class_embedding`). */
  readonly name: string;
  /** PyTorch shape (outermost first). */
  readonly shape: readonly number[];
  /** Stored element type: one of {@link SourceDtype}, or another name (`I64`) that {@link TensorSource.read} refuses. */
  readonly dtype: string;
  /** Where it comes from, for error messages. */
  readonly file: string;
  /** The values in row-major (C) order as float32. */
  read(): Promise<Float32Array>;
  /**
   * The stored bytes in row-major order, little-endian, of {@link TensorSource.dtype}
   * (a fresh, aligned buffer): lets a converter copy f16/bf16 data without a float32 detour.
   */
  readRaw?(): Promise<Uint8Array>;
  /**
   * Where those same bytes lie, contiguous, in a plain file (undefined when they do not, e.g.
   * in a compressed zip entry): lets a converter copy them in chunks through reused buffers.
   */
  rawFileRange?(): Promise<{ path: string; offset: number } | undefined>;
}

/** Bytes per element of each decodable type. */
export const DTYPE_SIZE: Readonly<Record<SourceDtype, number>> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

/** True when `dtype` is one {@link decodeValues} understands. */
export function isDecodable(dtype: string): dtype is SourceDtype {
  return dtype in DTYPE_SIZE;
}

let halfTable: Float32Array | undefined;

// A 65536-entry table decodes f16 several times faster than bit twiddling per value,
// which matters for the ~1 G values of an fp16 EVA ViT-g.
function halfToFloat(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = f16ToF32(i);
  }
  return halfTable;
}

/**
 * Decode little-endian `bytes` of `dtype` into float32. `bytes` must start on a fresh
 * ArrayBuffer (offset 0) or any offset aligned to the element size.
 */
export function decodeValues(dtype: SourceDtype, bytes: Uint8Array): Float32Array {
  const size = DTYPE_SIZE[dtype];
  const n = Math.floor(bytes.length / size);
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, n).slice();
    case 'F64':
      return Float32Array.from(new Float64Array(aligned.buffer, aligned.byteOffset, n));
    case 'F16': {
      const table = halfToFloat();
      const src = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[src[i]];
      return out;
    }
    case 'BF16': {
      // bfloat16 is the upper half of a float32: shifting it back up is exact.
      const src = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
  }
}

/** Throws the error for a tensor whose element type cannot become float32. */
export function refuseDtype(name: string, dtype: string, file: string): never {
  throw new ModelLoadError('ERR_MODEL_LOAD', `${file}: tensor "${name}" has element type ${dtype}; only F32, F16, BF16 and F64 tensors can be converted`);
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
