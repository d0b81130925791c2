/** IEEE half-precision conversion matching ggml's GGML_FP32_TO_FP16 / GGML_FP16_TO_FP32. */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Convert a number to IEEE binary16 bits, rounding to nearest, ties to even, exactly
 * as ggml does (it first rounds to float32, as C does on assignment). NaN becomes the
 * quiet NaN 0x7e00 (with the sign), overflow becomes infinity.
 */
export function f32ToF16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | (mant !== 0 ? 0x7e00 : 0x7c00);
  if (exp >= 113) {
    // Normal half (or overflow): rebias the exponent, round away 13 mantissa bits.
    // A carry out of the mantissa correctly bumps the exponent, up to infinity.
    if (exp > 142) return sign | 0x7c00;
    let h = ((exp - 112) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++;
    return sign | h;
  }
  // Subnormal half: value = m * 2^(exp-150), in units of 2^-24 that is m >> (126 - exp).
  const shift = 126 - exp;
  if (shift > 24) return sign; // below half the smallest subnormal: rounds to zero
  const m = mant | 0x800000;
  let h = m >>> shift;
  const rest = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (h & 1) !== 0)) h++;
  return sign | h;
}

/** Decode IEEE binary16 bits to a number (exact). */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}
