/**
 * @internal
 * What libmtmd's graph builders (tools/mtmd/models/*.cpp of the llama.cpp we build) take for
 * granted about a projector's tensors. They load these tensors as optional, then assert on
 * them or dereference them when the first image is encoded, so a file that names one
 * projector type but holds another's tensors aborts or segfaults the process. Found by fuzzing
 * the projector type of the tiny test projector, then read off each builder's opening asserts.
 */
import type { GgufHeader } from '../gguf/types.js';

const CLASS = 'v.class_embd';
const POSITION = 'v.position_embd.weight';
const PATCH = 'v.patch_embd.weight';
const PATCH_1 = 'v.patch_embd.weight.1'; // the second temporal patch kernel of Qwen-VL-style encoders
const PATCH_BIAS = 'v.patch_embd.bias';

interface GraphRule {
  /** Tensors the graph uses unconditionally. */
  needs?: string[];
  /** Tensors the graph asserts are absent. */
  forbids?: string[];
  /** Every encoder layer must have a fused attn_qkv (the graph has no separate q/k/v path). */
  fusedQkv?: boolean;
}

const QWEN2VL: GraphRule = { needs: [PATCH, PATCH_1], forbids: [PATCH_BIAS, CLASS] };

/** By projector type name (as in clip.projector_type, after qwen2.5o is mapped to its vision side). */
export const GRAPH_RULES: Readonly<Record<string, GraphRule>> = {
  'qwen2vl_merger': QWEN2VL,
  'qwen2.5vl_merger': QWEN2VL,
  'qwen3vl_merger': { needs: [PATCH, PATCH_1, PATCH_BIAS, POSITION], forbids: [CLASS] },
  'exaone4_5': { needs: [PATCH, PATCH_1], forbids: [PATCH_BIAS, CLASS], fusedQkv: true },
  'glm4v': { needs: [PATCH, PATCH_1, PATCH_BIAS], forbids: [CLASS] },
  'mimovl': { needs: [PATCH, PATCH_1], forbids: [CLASS], fusedQkv: true },
  'minimax_m3': { needs: [PATCH, PATCH_1], forbids: [PATCH_BIAS, CLASS] },
  'step3vl': { needs: [PATCH, POSITION], forbids: [CLASS] },
  'cogvlm': { needs: [CLASS, POSITION], fusedQkv: true },
  'internvl': { needs: [CLASS, POSITION] },
  'llama4': { needs: [CLASS, POSITION] },
  'nemotron_v2_vl': { needs: [CLASS, POSITION] },
  'granite4_vision': { needs: [PATCH, POSITION, 'v.image_newline'], forbids: [CLASS] },
  'resampler': { forbids: [CLASS] },
  'youtuvl': { forbids: [CLASS] },
  'yasa2': { needs: [PATCH] },
};

/** Problems with `h` as a projector of `type` whose encoder has `nLayer` standard layers. */
export function checkGraphRules(h: GgufHeader, type: string, nLayer: number | undefined): string[] {
  const rule = GRAPH_RULES[type];
  if (!rule) return [];
  const problems: string[] = [];
  for (const name of rule.needs ?? []) {
    if (!h.tensorsByName.has(name)) problems.push(`required tensor ${name} is missing (a ${type} projector's graph uses it)`);
  }
  for (const name of rule.forbids ?? []) {
    if (h.tensorsByName.has(name)) problems.push(`tensor ${name} is present, but a ${type} projector must not have it: the file is not a ${type} projector`);
  }
  if (rule.fusedQkv && nLayer !== undefined) {
    for (let il = 0; il < nLayer; il++) {
      if (!h.tensorsByName.has(`v.blk.${il}.attn_qkv.weight`)) {
        problems.push(`required tensor v.blk.${il}.attn_qkv.weight is missing (a ${type} projector's graph uses it)`);
        break;
      }
    }
  }
  return problems;
}

/**
 * Yasa2 (ConvNeXt) pools its last feature map to 8x8 = 64 tokens, and libmtmd aborts when the
 * graph makes any other number; the map's size follows from image_size, the patch stride and
 * the kernels of the stages' down-sampling and depthwise convolutions.
 */
export function checkYasa2Grid(h: GgufHeader, imageSize: number, patchSize: number): string[] {
  const kernel = (name: string) => h.tensorsByName.get(name)?.shape[0];
  let side = Math.floor((imageSize - (kernel(PATCH) ?? patchSize)) / patchSize) + 1;
  for (let s = 0; ; s++) {
    const down = kernel(`v.stage.${s}.down.conv.weight`);
    if (down === undefined && kernel(`v.stage.${s}.blk.0.dw.weight`) === undefined) break;
    if (down !== undefined) side = Math.floor((side - down) / 2) + 1;
    for (let b = 0; ; b++) {
      const dw = kernel(`v.stage.${s}.blk.${b}.dw.weight`);
      if (dw === undefined) break;
      side = side + 2 * 3 - dw + 1; // stride 1, padding 3
    }
  }
  const pooled = Math.min(8, side);
  const stride = Math.max(1, Math.floor(side / pooled));
  const out = side >= 1 ? Math.floor((side - stride) / stride) + 1 : 0;
  return out === 8 ? [] : [`a yasa2 projector must pool its feature map to 8x8 tokens, but image_size ${imageSize} with these convolutions gives ${Math.max(0, out)}x${Math.max(0, out)}`];
}

/**
 * Whether every layer of the encoder has attention weights: fused attn_qkv or all of attn_q,
 * attn_k and attn_v (clip.cpp's shared ViT builder takes whichever is there and dereferences it).
 * Returns the first layer without, or undefined.
 */
export function layerWithoutAttention(h: GgufHeader, nLayer: number): number | undefined {
  const has = (name: string) => h.tensorsByName.has(name);
  for (let il = 0; il < nLayer; il++) {
    const b = `v.blk.${il}`;
    if (!has(`${b}.attn_qkv.weight`) && !(has(`${b}.attn_q.weight`) && has(`${b}.attn_k.weight`) && has(`${b}.attn_v.weight`))) return il;
  }
  return undefined;
}
