/**
 * @internal
 * Tensor types that ggml's CPU ops cannot take where llama.cpp and libmtmd put them: they abort
 * ("unsupported types") or call a missing kernel when the graph first runs, after the load
 * succeeded. Found by fuzzing the type tags of the tiny test models.
 */
import { GgmlType, ggmlTypeName, type GgufHeader, type GgufTensorInfo } from '../gguf/types.js';

/**
 * Types a weight matrix may have: those with a CPU dot-product kernel (ggml-cpu.c
 * type_traits_cpu `.vec_dot`). Q8_1 and Q8_K are only ever intermediate types.
 */
const MATRIX_TYPES = new Set<GgmlType>([
  GgmlType.F32, GgmlType.F16, GgmlType.BF16,
  GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0,
  GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
  GgmlType.IQ2_XXS, GgmlType.IQ2_XS, GgmlType.IQ3_XXS, GgmlType.IQ1_S, GgmlType.IQ4_NL, GgmlType.IQ3_S,
  GgmlType.IQ2_S, GgmlType.IQ4_XS, GgmlType.IQ1_M, GgmlType.TQ1_0, GgmlType.TQ2_0,
  GgmlType.MXFP4, GgmlType.NVFP4, GgmlType.Q1_0, GgmlType.Q2_0,
]);

// Only tensors the graphs use as weights are judged; a few architectures carry index tables
// (integer tensors under other names) that are none of our business.
function isWeight(t: GgufTensorInfo): boolean {
  return t.name.endsWith('.weight') || t.name.endsWith('.bias') || t.name === 'v.class_embd';
}

/** Problems with the types of `h`'s weights; empty when none. */
export function checkTensorTypes(h: GgufHeader): string[] {
  for (const t of h.tensors) {
    if (!isWeight(t)) continue;
    const vector = t.shape.slice(1).every((d) => d === 1);
    // Norm weights, biases and embeddings are added to or multiplied with f32 activations,
    // which ggml's CPU binary ops accept only from f32.
    if (vector && t.type !== GgmlType.F32) {
      return [`tensor ${t.name} is a vector of type ${ggmlTypeName(t.type)}; vectors (norms, biases) must be f32`];
    }
    if (!vector && !MATRIX_TYPES.has(t.type)) {
      return [`tensor ${t.name} has type ${ggmlTypeName(t.type)}, which cannot be used as a weight matrix`];
    }
  }
  return [];
}
