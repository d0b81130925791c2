/**
 * Encoders for the tensor types we write, ported from ggml's reference quantizers
 * (quantize_row_*_ref in ggml-quants.c) so the bytes are identical to what ggml
 * writes. Every float operation is rounded to float32 with Math.fround because the
 * C code computes in float, and rounding differences would change the quants.
 */
import { f16ToF32, f32ToF16 } from './f16.js';
import { GgmlType, ggmlTypeName, ggmlTypeTraits } from './types.js';

const fr = Math.fround;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const QK = 32;
const FLT_MAX = 3.4028234663852886e38;

/** The ggml types {@link encodeTensorData} can produce. */
export const WRITABLE_TYPES: ReadonlySet<GgmlType> = new Set([
  GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
]);

/**
 * Encode `src` (a whole number of blocks) as `type` into `dst` starting at `dstOffset`.
 * Returns the number of bytes written.
 */
export function encodeTensorData(type: GgmlType, src: Float32Array, dst: Uint8Array, dstOffset = 0): number {
  const traits = ggmlTypeTraits(type);
  if (!traits || !WRITABLE_TYPES.has(type)) throw new RangeError(`cannot encode tensors of type ${ggmlTypeName(type)}`);
  if (src.length % traits.blockSize !== 0) throw new RangeError(`${traits.name} data must be a multiple of ${traits.blockSize} values`);
  const bytes = (src.length / traits.blockSize) * traits.typeSize;
  const view = new DataView(dst.buffer, dst.byteOffset + dstOffset, bytes);
  switch (type) {
    case GgmlType.F32:
      if (LITTLE_ENDIAN) dst.set(new Uint8Array(src.buffer, src.byteOffset, bytes), dstOffset);
      else for (let i = 0; i < src.length; i++) view.setFloat32(i * 4, src[i], true);
      break;
    case GgmlType.F16:
      for (let i = 0; i < src.length; i++) view.setUint16(i * 2, f32ToF16(src[i]), true);
      break;
    default:
      for (let b = 0; b < src.length / QK; b++) {
        const x = src.subarray(b * QK, (b + 1) * QK);
        const o = b * traits.typeSize;
        if (type === GgmlType.Q8_0) quantQ8_0(x, view, o);
        else if (type === GgmlType.Q4_0) quantQ4_0(x, view, o);
        else if (type === GgmlType.Q4_1) quantQ4_1(x, view, o);
        else if (type === GgmlType.Q5_0) quantQ5_0(x, view, o);
        else quantQ5_1(x, view, o);
      }
  }
  return bytes;
}

// Value with the largest magnitude (first one wins on ties, like ggml's strict `<`).
function signedAbsMax(x: Float32Array): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < QK; j++) {
    const a = Math.abs(x[j]);
    if (amax < a) {
      amax = a;
      max = x[j];
    }
  }
  return max;
}

function minMax(x: Float32Array): [number, number] {
  let min = FLT_MAX;
  let max = -FLT_MAX;
  for (let j = 0; j < QK; j++) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  return [min, max];
}

// C's roundf: halves away from zero (Math.round rounds -2.5 to -2).
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function quantQ8_0(x: Float32Array, out: DataView, o: number): void {
  let amax = 0;
  for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[j]));
  const d = fr(amax / 127);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(o, f32ToF16(d), true);
  for (let j = 0; j < QK; j++) out.setInt8(o + 2 + j, roundf(fr(x[j] * id)));
}

function quantQ4_0(x: Float32Array, out: DataView, o: number): void {
  const d = fr(signedAbsMax(x) / -8);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(o, f32ToF16(d), true);
  for (let j = 0; j < QK / 2; j++) {
    const q0 = Math.min(15, Math.trunc(fr(fr(x[j] * id) + 8.5)));
    const q1 = Math.min(15, Math.trunc(fr(fr(x[j + QK / 2] * id) + 8.5)));
    out.setUint8(o + 2 + j, q0 | (q1 << 4));
  }
}

function quantQ4_1(x: Float32Array, out: DataView, o: number): void {
  const [min, max] = minMax(x);
  const d = fr(fr(max - min) / 15);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(o, f32ToF16(d), true);
  out.setUint16(o + 2, f32ToF16(min), true);
  for (let j = 0; j < QK / 2; j++) {
    const q0 = Math.min(15, Math.trunc(fr(fr(fr(x[j] - min) * id) + 0.5)));
    const q1 = Math.min(15, Math.trunc(fr(fr(fr(x[j + QK / 2] - min) * id) + 0.5)));
    out.setUint8(o + 4 + j, q0 | (q1 << 4));
  }
}

function quantQ5_0(x: Float32Array, out: DataView, o: number): void {
  const d = fr(signedAbsMax(x) / -16);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(o, f32ToF16(d), true);
  let qh = 0;
  for (let j = 0; j < QK / 2; j++) {
    const q0 = Math.min(31, Math.trunc(fr(fr(x[j] * id) + 16.5)));
    const q1 = Math.min(31, Math.trunc(fr(fr(x[j + QK / 2] * id) + 16.5)));
    out.setUint8(o + 6 + j, (q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= ((q0 & 0x10) >>> 4) << j;
    qh |= ((q1 & 0x10) >>> 4) << (j + QK / 2);
  }
  out.setUint32(o + 2, qh >>> 0, true);
}

function quantQ5_1(x: Float32Array, out: DataView, o: number): void {
  const [min, max] = minMax(x);
  const d = fr(fr(max - min) / 31);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(o, f32ToF16(d), true);
  out.setUint16(o + 2, f32ToF16(min), true);
  let qh = 0;
  for (let j = 0; j < QK / 2; j++) {
    // No clamp here in ggml either; the uint8_t cast wraps.
    const q0 = Math.trunc(fr(fr(fr(x[j] - min) * id) + 0.5)) & 0xff;
    const q1 = Math.trunc(fr(fr(fr(x[j + QK / 2] - min) * id) + 0.5)) & 0xff;
    out.setUint8(o + 8 + j, (q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= ((q0 & 0x10) >>> 4) << j;
    qh |= ((q1 & 0x10) >>> 4) << (j + QK / 2);
  }
  out.setUint32(o + 4, qh >>> 0, true);
}

/**
 * Decode `n` values of `type` from `src` (ggml's dequantize_row_* for the quantized
 * types). Meant for tests and small tensors.
 */
export function decodeTensorData(type: GgmlType, src: Uint8Array, n: number): Float32Array {
  const traits = ggmlTypeTraits(type);
  if (!traits || !WRITABLE_TYPES.has(type)) throw new RangeError(`cannot decode tensors of type ${ggmlTypeName(type)}`);
  if (n % traits.blockSize !== 0) throw new RangeError(`${traits.name} data must be a multiple of ${traits.blockSize} values`);
  const need = (n / traits.blockSize) * traits.typeSize;
  if (src.length < need) throw new RangeError(`need ${need} bytes of ${traits.name} data for ${n} values, got ${src.length}`);
  const v = new DataView(src.buffer, src.byteOffset, need);
  const y = new Float32Array(n);
  if (type === GgmlType.F32) {
    for (let i = 0; i < n; i++) y[i] = v.getFloat32(i * 4, true);
    return y;
  }
  if (type === GgmlType.F16) {
    for (let i = 0; i < n; i++) y[i] = f16ToF32(v.getUint16(i * 2, true));
    return y;
  }
  const half = QK / 2;
  for (let b = 0; b < n / QK; b++) {
    const o = b * traits.typeSize;
    const base = b * QK;
    const d = f16ToF32(v.getUint16(o, true));
    if (type === GgmlType.Q8_0) {
      for (let j = 0; j < QK; j++) y[base + j] = v.getInt8(o + 2 + j) * d;
    } else if (type === GgmlType.Q4_0) {
      for (let j = 0; j < half; j++) {
        const q = v.getUint8(o + 2 + j);
        y[base + j] = ((q & 0x0f) - 8) * d;
        y[base + j + half] = ((q >> 4) - 8) * d;
      }
    } else if (type === GgmlType.Q4_1) {
      const m = f16ToF32(v.getUint16(o + 2, true));
      for (let j = 0; j < half; j++) {
        const q = v.getUint8(o + 4 + j);
        y[base + j] = (q & 0x0f) * d + m;
        y[base + j + half] = (q >> 4) * d + m;
      }
    } else {
      const hasMin = type === GgmlType.Q5_1;
      const m = hasMin ? f16ToF32(v.getUint16(o + 2, true)) : 0;
      const qh = v.getUint32(o + (hasMin ? 4 : 2), true);
      const qs = o + (hasMin ? 8 : 6);
      const bias = hasMin ? 0 : 16;
      for (let j = 0; j < half; j++) {
        const q = v.getUint8(qs + j);
        const h0 = ((qh >>> j) << 4) & 0x10;
        const h1 = (qh >>> (j + 12)) & 0x10;
        y[base + j] = (((q & 0x0f) | h0) - bias) * d + m;
        y[base + j + half] = (((q >> 4) | h1) - bias) * d + m;
      }
    }
  }
  return y;
}
