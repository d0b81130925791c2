/**
 * @internal
 * The tensor list of a BLIP-2 GGUF (docs/blip2-gguf.md): which checkpoint tensor feeds
 * each one, the shape it must have, the type it is stored as, and how its values are made.
 */
import { ModelLoadError } from '../errors.js';
import { GgmlType, ggmlTypeTraits } from '../gguf/types.js';
import { neOf, type Blip2Hparams, type Slot } from './blip2-hparams.js';
import { describeSources } from './names.js';
import type { TensorSource } from './source.js';

/** File types `convertBlip2` can write. */
export type Blip2FileType = 'f32' | 'f16' | 'q8_0' | 'q5_0' | 'q5_1' | 'q4_0' | 'q4_1';

/**
 * What a tensor is, for choosing its type: `matrix` (ViT and Q-Former weight matrices,
 * which take the file type), `patch` (the patch embedding) and `proj` (`proj.weight`),
 * which become f16 unless the file type is f32, and `f32` (embeddings, norms, biases,
 * query tokens), always f32.
 */
export type Blip2TensorRole = 'matrix' | 'patch' | 'proj' | 'f32';

/** One tensor to write. */
export interface PlannedTensor {
  name: string;
  role: Blip2TensorRole;
  /** ggml `ne` order. */
  shape: number[];
  read: () => Promise<Float32Array>;
}

const QUANT: Record<Blip2FileType, GgmlType> = {
  f32: GgmlType.F32, f16: GgmlType.F16, q8_0: GgmlType.Q8_0, q5_0: GgmlType.Q5_0, q5_1: GgmlType.Q5_1, q4_0: GgmlType.Q4_0, q4_1: GgmlType.Q4_1,
};

/**
 * The ggml type a tensor is stored as. A matrix whose rows (`ne0`) are not a whole number
 * of quant blocks cannot be quantized and falls back to f16.
 */
export function blip2TensorType(role: Blip2TensorRole, ne0: number, fileType: Blip2FileType): GgmlType {
  if (role === 'f32' || fileType === 'f32') return GgmlType.F32;
  if (role !== 'matrix' || fileType === 'f16') return GgmlType.F16;
  const type = QUANT[fileType];
  return ne0 % ggmlTypeTraits(type)!.blockSize === 0 ? type : GgmlType.F16;
}

const loadErr = (msg: string) => new ModelLoadError('ERR_MODEL_LOAD', msg);

/**
 * List every tensor of the GGUF for `hp`, checking that each exists with the right shape,
 * and that fused ViT qkv biases have an all-zero K part (EVA has no K bias; our runtime
 * relies on it, and a non-zero one would mean the checkpoint is not what it claims).
 */
export async function planTensors(slots: Map<string, Slot>, hp: Blip2Hparams): Promise<PlannedTensor[]> {
  const out: PlannedTensor[] = [];
  const E = hp.vision.width;
  const F = hp.vision.ff;
  const P = hp.patchSize;
  const T = 1 + (hp.imageSize / P) ** 2;

  const add = (name: string, role: Blip2TensorRole, shape: number[]) => {
    const src = slots.get(name)?.whole;
    if (!src) throw loadErr(`missing tensor ${describeSources(name)} (GGUF ${name})`);
    checkShape(src, shape, name);
    out.push({ name, role, shape, read: () => src.read() });
  };
  const linear = (prefix: string, nIn: number, nOut: number, role: Blip2TensorRole = 'matrix') => {
    add(`${prefix}.weight`, role, [nIn, nOut]);
    add(`${prefix}.bias`, 'f32', [nOut]);
  };
  const norm = (prefix: string, n: number) => {
    add(`${prefix}.weight`, 'f32', [n]);
    add(`${prefix}.bias`, 'f32', [n]);
  };

  add('v.patch_embd.weight', 'patch', [P, P, 3, E]);
  add('v.patch_embd.bias', 'f32', [E]);
  add('v.class_embd', 'f32', [E]);
  add('v.position_embd', 'f32', [E, T]);
  for (let i = 0; i < hp.vision.blocks; i++) {
    const b = `v.blk.${i}`;
    norm(`${b}.ln1`, E);
    add(`${b}.attn_qkv.weight`, 'matrix', [E, 3 * E]);
    out.push({ name: `${b}.attn_qkv.bias`, role: 'f32', shape: [3 * E], read: await qkvBias(slots, `${b}.attn_qkv.bias`, E) });
    linear(`${b}.attn_out`, E, E);
    norm(`${b}.ln2`, E);
    linear(`${b}.ffn_up`, E, F);
    linear(`${b}.ffn_down`, F, E);
  }
  if (hp.variant === 'patch_group' && !slots.has('v.ln_vision.weight') && !slots.has('v.ln_vision.bias')) {
    // MiniGPT-4 Llama 2 never loads ln_vision (no Q-Former checkpoint, and it is frozen so
    // its own checkpoint omits it): it runs with LayerNorm's initial weight 1, bias 0.
    out.push({ name: 'v.ln_vision.weight', role: 'f32', shape: [E], read: async () => new Float32Array(E).fill(1) });
    out.push({ name: 'v.ln_vision.bias', role: 'f32', shape: [E], read: async () => new Float32Array(E) });
  } else {
    norm('v.ln_vision', E);
  }

  const qf = hp.qformer;
  if (hp.variant === 'qformer' && qf) {
    const H = qf.hidden;
    add('qf.query_tokens', 'f32', [H, qf.queries]);
    norm('qf.ln_emb', H);
    for (let i = 0; i < qf.blocks; i++) {
      const b = `qf.blk.${i}`;
      for (const p of ['self_q', 'self_k', 'self_v', 'self_out']) linear(`${b}.${p}`, H, H);
      norm(`${b}.self_ln`, H);
      if (i % qf.crossFreq === 0) {
        linear(`${b}.cross_q`, H, H);
        linear(`${b}.cross_k`, E, H);
        linear(`${b}.cross_v`, E, H);
        linear(`${b}.cross_out`, H, H);
        norm(`${b}.cross_ln`, H);
      }
      linear(`${b}.ffn_up`, H, qf.ff);
      linear(`${b}.ffn_down`, qf.ff, H);
      norm(`${b}.ffn_ln`, H);
    }
  }
  const projIn = hp.variant === 'qformer' ? qf!.hidden : E * hp.inputGroup;
  linear('proj', projIn, hp.outputLength, 'proj');
  return out;
}

function checkShape(src: TensorSource, expected: number[], name: string): void {
  const ne = neOf(src, expected.length);
  if (ne.length !== expected.length || ne.some((d, i) => d !== expected[i])) {
    const torchOrder = [...expected].reverse().join(', ');
    throw loadErr(`tensor ${src.name} in ${src.file} has shape [${src.shape.join(', ')}], expected [${torchOrder}] (GGUF ${name})`);
  }
}

// The fused [q | 0 | v] bias, from one fused tensor or from EVA's q_bias and v_bias.
async function qkvBias(slots: Map<string, Slot>, name: string, E: number): Promise<() => Promise<Float32Array>> {
  const slot = slots.get(name);
  if (slot?.whole) {
    const src = slot.whole;
    checkShape(src, [3 * E], name);
    const values = await src.read();
    for (let i = E; i < 2 * E; i++) {
      if (values[i] !== 0) {
        throw loadErr(`tensor ${src.name} in ${src.file} has a non-zero key bias (element ${i} is ${values[i]}); EVA attention has no key bias, so this is not a BLIP-2 ViT`);
      }
    }
    return () => src.read();
  }
  if (!slot?.q || !slot.v) {
    const missing = slot?.q ? 'v_bias' : 'q_bias';
    throw loadErr(`missing ${missing} for ${describeSources(name)} (GGUF ${name})`);
  }
  const { q, v } = slot;
  checkShape(q, [E], name);
  checkShape(v, [E], name);
  return async () => {
    const out = new Float32Array(3 * E);
    out.set(await q.read(), 0);
    out.set(await v.read(), 2 * E);
    return out;
  };
}
