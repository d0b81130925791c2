/**
 * Pre-flight checks of model and projector headers. libmtmd (llama.cpp's multimodal
 * library) loads most projector tensors as optional and then dereferences them while
 * building its graph, so a file missing one of them crashes the process instead of
 * failing to load; its typed key getters likewise abort on a wrongly typed key. These
 * checks find such problems from the header alone, before any native code sees the file.
 * The rules mirror tools/mtmd/clip.cpp and models/llava.cpp of the llama.cpp we build.
 */
import { asLlamaCppSeesIt } from '../gguf/c-strings.js';
import { KeyChecker } from '../gguf/key-checks.js';
import { KNOWN_ARCHITECTURES } from './llm-architectures.js';
import { checkLlmHparams } from './llm-hparams-check.js';
import { checkGraphRules, checkYasa2Grid, layerWithoutAttention } from './mtmd-graph-rules.js';
import { checkTensorTypes } from './tensor-type-check.js';
import { GgufValueType, getString, type GgufHeader, type GgufTensorInfo } from '../gguf/types.js';

/** Projector type names this llama.cpp knows (clip-impl.h PROJECTOR_TYPE_NAMES). */
export const KNOWN_PROJECTOR_TYPES: readonly string[] = [
  'mlp', 'ldp', 'ldpv2', 'resampler', 'adapter', 'qwen2vl_merger', 'qwen2.5vl_merger', 'qwen3vl_merger', 'step3vl',
  'gemma3', 'gemma3nv', 'gemma3na', 'gemma4v', 'gemma4a', 'gemma4uv', 'gemma4ua', 'phi4', 'idefics3', 'pixtral',
  'ultravox', 'internvl', 'llama4', 'qwen2a', 'qwen3a', 'glma', 'qwen2.5o', 'voxtral', 'meralion', 'musicflamingo',
  'lfm2', 'kimivl', 'paddleocr', 'lightonocr', 'cogvlm', 'janus_pro', 'dots_ocr', 'dots3note_v', 'dots3note_a',
  'deepseekocr', 'deepseekocr2', 'deepseek4v', 'lfm2a', 'glm4v', 'youtuvl', 'yasa2', 'kimik25', 'nemotron_v2_vl',
  'exaone4_5', 'hunyuanvl', 'minicpmv4_6', 'granite_speech', 'mimovl', 'minimax_m3', 'granite4_vision',
  'mimo_audio', 'parakeet', 'qwen3tts_spkenc', 'qwen3tts_gen', 'pockettts_spkenc', 'pockettts_gen', 'muse-glimmer',
];

// Vision graphs that do not start from v.patch_embd.weight.
const NO_PATCH_EMBD = new Set(['deepseekocr', 'deepseekocr2', 'dots3note_v', 'gemma3nv']);
// Types whose encoder has no standard v.blk.N layers.
const NO_STANDARD_LAYERS = new Set(['gemma3nv', 'qwen3tts_spkenc', 'pockettts_gen']);

const LDP_TENSORS = [
  'mm.model.mlp.1.weight', 'mm.model.mlp.1.bias', 'mm.model.mlp.3.weight', 'mm.model.mlp.3.bias',
  ...[1, 2].flatMap((b) => [
    `mm.model.mb_block.${b}.block.0.0.weight`, `mm.model.mb_block.${b}.block.0.1.weight`, `mm.model.mb_block.${b}.block.0.1.bias`,
    `mm.model.mb_block.${b}.block.1.fc1.weight`, `mm.model.mb_block.${b}.block.1.fc1.bias`,
    `mm.model.mb_block.${b}.block.1.fc2.weight`, `mm.model.mb_block.${b}.block.1.fc2.bias`,
    `mm.model.mb_block.${b}.block.2.0.weight`, `mm.model.mb_block.${b}.block.2.1.weight`, `mm.model.mb_block.${b}.block.2.1.bias`,
  ]),
];
const LDPV2_TENSORS = ['mm.model.mlp.0.weight', 'mm.model.mlp.0.bias', 'mm.model.mlp.2.weight', 'mm.model.mlp.2.bias', 'mm.model.peg.0.weight', 'mm.model.peg.0.bias'];

/**
 * Problems that would make llama.cpp refuse, crash on, or misuse `h` as a text model;
 * empty when none are found. Catches the common mix-up of passing a projector as the model.
 */
export function checkTextModelHeader(h: GgufHeader): string[] {
  h = asLlamaCppSeesIt(h); // keys, names and string values up to a NUL, as the loaders read them
  const arch = getString(h, 'general.architecture');
  if (arch === undefined) {
    return ['general.architecture is missing or not a string: this is not a llama.cpp model file'];
  }
  if (arch === 'clip') {
    return ['this looks like a projector (clip), not a text model: pass it as the projector and the language model as the model'];
  }
  if (getString(h, 'general.type') === 'adapter') {
    return [`this is a LoRA adapter (architecture ${arch}), not a model`];
  }
  if (arch === 'blip2') {
    return ['this looks like a BLIP-2 projector, not a text model: pass it as the projector and the language model as the model'];
  }
  if (!KNOWN_ARCHITECTURES.has(arch)) {
    return [`unknown model architecture "${arch.slice(0, 60)}": it is not one of the ${KNOWN_ARCHITECTURES.size} architectures this build of llama.cpp supports (llama, qwen2, gemma3, ...); the model may need a newer minigpt-node, or the file is corrupt`];
  }
  const keys = new KeyChecker(h);
  const why = ': the file is incomplete or not a language model';
  keys.u32(`${arch}.embedding_length`, true, why);
  keys.u32(`${arch}.block_count`, true, why);
  keys.str('tokenizer.ggml.model', true, ': the model has no tokenizer');
  return [...keys.problems, ...checkLlmHparams(h, arch), ...checkTensorTypes(h)];
}

/**
 * Problems that would make libmtmd refuse or crash on `h` as a vision projector (mmproj);
 * empty when none are found. With `textModelEmbd` (the text model's embedding size),
 * also checks that the projector's output fits the text model.
 */
export function checkMmprojHeader(h: GgufHeader, textModelEmbd: number | undefined): string[] {
  h = asLlamaCppSeesIt(h); // keys, names and string values up to a NUL, as the loaders read them
  // libmtmd itself never reads general.architecture, so only a non-clip value, or no
  // clip keys at all, marks a file that is not a projector.
  const arch = getString(h, 'general.architecture');
  if (arch !== undefined && arch !== 'clip') {
    return [`this looks like a text model (architecture ${arch}), not a projector: pass the mmproj file as the projector`];
  }
  if (arch === undefined && !h.metadata.has('clip.has_vision_encoder') && !h.metadata.has('clip.projector_type')) {
    return ['general.architecture is missing and there are no clip.* keys: this is not a llama.cpp projector (mmproj) file'];
  }

  const keys = new KeyChecker(h);
  // Read (as strings) for logging when libmtmd loads the file.
  keys.str('general.name', false);
  keys.str('general.description', false);
  const hasVision = keys.bool('clip.has_vision_encoder', true, ': the projector must declare a vision encoder');
  if (hasVision === false) keys.problems.push('this projector has no vision encoder (clip.has_vision_encoder is false), so it cannot read images');
  if (!hasVision) return keys.problems;

  let type = keys.str('clip.projector_type', false) ?? keys.str('clip.vision.projector_type', false);
  if (type === undefined) {
    if (keys.problems.length === 0) keys.problems.push('the projector type (clip.projector_type) is missing');
    return keys.problems;
  }
  if (!KNOWN_PROJECTOR_TYPES.includes(type)) {
    keys.problems.push(`unknown projector type "${type}": this version of llama.cpp supports ${KNOWN_PROJECTOR_TYPES.join(', ')}`);
    return keys.problems;
  }
  if (type === 'qwen2.5o') type = 'qwen2.5vl_merger'; // what clip.cpp picks for the vision side

  const hp = readVisionHparams(keys);
  const problems = keys.problems;
  // Each layer holds at least its attn_out tensor; a larger count is corrupt, and checking
  // layer by layer up to it could take minutes and all the heap.
  if (hp.nLayer !== undefined && hp.nLayer > h.tensors.length) {
    problems.push(`clip.vision.block_count is ${hp.nLayer}, more layers than the file's ${h.tensors.length} tensors can hold`);
    return problems;
  }
  const tensors = new TensorChecker(h, problems);

  if (!NO_PATCH_EMBD.has(type)) tensors.require('v.patch_embd.weight', 'the patch embedding');
  if (!NO_STANDARD_LAYERS.has(type) && hp.nLayer !== undefined) {
    for (let il = 0; il < hp.nLayer; il++) {
      const b = `v.blk.${il}`;
      tensors.require(`${b}.attn_out.weight`);
      if (!h.tensorsByName.has(`${b}.ffn_gate_exps.weight`)) {
        tensors.require(`${b}.ffn_up.weight`);
        tensors.require(`${b}.ffn_down.weight`);
      }
    }
  }

  let outputSize: number | undefined;
  if (type === 'mlp' || type === 'ldp' || type === 'ldpv2') outputSize = checkLlavaFamily(h, type, hp, tensors, problems);
  else {
    problems.push(...checkGraphRules(h, type, hp.nLayer));
    // The LLaVA graph skips the last layer (checked above); the shared ViT runs every one.
    const bare = !NO_STANDARD_LAYERS.has(type) && hp.nLayer !== undefined ? layerWithoutAttention(h, hp.nLayer) : undefined;
    if (bare !== undefined) problems.push(`encoder layer ${bare} has no attention weights (v.blk.${bare}.attn_qkv.weight, or attn_q, attn_k and attn_v)`);
    if (type === 'yasa2' && hp.imageSize && hp.patchSize) problems.push(...checkYasa2Grid(h, hp.imageSize, hp.patchSize));
  }

  problems.push(...checkTensorTypes(h));
  if (textModelEmbd !== undefined && outputSize !== undefined && outputSize !== textModelEmbd) {
    problems.push(`projector output size ${outputSize} does not match the text model's embedding size ${textModelEmbd}: this projector was made for a different language model`);
  }
  return problems;
}

interface VisionHparams {
  nEmbd?: number;
  nHead?: number;
  headDim?: number;
  nLayer?: number;
  imageSize?: number;
  patchSize?: number;
  featureLayers?: number[];
}

function readVisionHparams(keys: KeyChecker): VisionHparams {
  const p = 'clip.vision.';
  const hp: VisionHparams = {
    nEmbd: keys.u32(`${p}embedding_length`),
    nHead: keys.u32(`${p}attention.head_count`),
    nLayer: keys.u32(`${p}block_count`),
    imageSize: keys.u32(`${p}image_size`),
    patchSize: keys.u32(`${p}patch_size`),
    headDim: keys.u32(`${p}attention.head_dim`, false),
  };
  keys.u32(`${p}feed_forward_length`);
  keys.u32(`${p}projection_dim`);
  const eps = keys.f32(`${p}attention.layer_norm_epsilon`);
  // ggml's norm op asserts eps >= 0 when an image is encoded, long after the load succeeded.
  if (eps !== undefined && !(eps >= 0 && Number.isFinite(eps))) keys.problems.push(`${p}attention.layer_norm_epsilon is ${eps}; it must be a finite number >= 0`);
  keys.array(`${p}image_mean`, GgufValueType.FLOAT32, 3);
  keys.array(`${p}image_std`, GgufValueType.FLOAT32, 3);

  // Optional keys: absent is fine, but a wrong type aborts inside llama.cpp.
  keys.u32(`${p}attention.head_count_kv`, false);
  keys.str(`${p}mm_patch_merge_type`, false);
  keys.i32('clip.minicpmv_version', false);
  keys.u32('clip.minicpmv_query_num', false);
  keys.u32(`${p}projector.scale_factor`, false);
  if (keys.bool('clip.use_gelu', false) && keys.bool('clip.use_silu', false)) {
    keys.problems.push('clip.use_gelu and clip.use_silu are both true; only one activation can be chosen');
  }
  const pinpoints = keys.array(`${p}image_grid_pinpoints`, GgufValueType.INT32, 0, false) as number[] | undefined;
  if (pinpoints && pinpoints.length % 2 !== 0) keys.problems.push(`${p}image_grid_pinpoints must hold width/height pairs but has ${pinpoints.length} values`);
  const feature = keys.array(`${p}feature_layer`, GgufValueType.INT32, 0, false) as number[] | undefined;
  if (feature) {
    hp.featureLayers = feature;
    const bad = feature.find((v) => hp.nLayer !== undefined && v > hp.nLayer);
    if (bad !== undefined) keys.problems.push(`${p}feature_layer names layer ${bad}, but the encoder has only ${hp.nLayer} layers`);
  }

  if (hp.patchSize === 0) keys.problems.push(`${p}patch_size is 0`);
  if (hp.nHead === 0) keys.problems.push(`${p}attention.head_count is 0`);
  if (hp.nEmbd === 0) keys.problems.push(`${p}embedding_length is 0`);
  if (hp.imageSize !== undefined && hp.patchSize && hp.imageSize < hp.patchSize) {
    keys.problems.push(`${p}image_size ${hp.imageSize} is smaller than the patch size ${hp.patchSize}`);
  }
  return hp;
}

class TensorChecker {
  constructor(private readonly h: GgufHeader, private readonly problems: string[]) {}

  /** The tensor, or undefined after recording that it is missing. */
  require(name: string, what?: string): GgufTensorInfo | undefined {
    const t = this.h.tensorsByName.get(name);
    if (!t) this.problems.push(`required tensor ${name}${what ? ` (${what})` : ''} is missing`);
    return t;
  }

  get(name: string): GgufTensorInfo | undefined {
    return this.h.tensorsByName.get(name);
  }

  /**
   * Record a problem unless `t` (when present) has exactly `want` (trailing dimensions 1;
   * undefined entries are not checked): ggml asserts when an add, mul or reshape meets
   * any other shape.
   */
  shape(t: GgufTensorInfo | undefined, want: Array<number | undefined>, meaning: string): void {
    if (!t) return;
    const dims = Math.max(4, t.shape.length);
    for (let d = 0; d < dims; d++) {
      const expected = d < want.length ? want[d] : 1;
      if (expected !== undefined && (t.shape[d] ?? 1) !== expected) {
        this.problems.push(`tensor ${t.name} has shape [${t.shape.join(', ')}]: dimension ${d} should be ${expected} (${meaning})`);
        return;
      }
    }
  }

  /** Record a problem unless dimension `dim` of `t` equals `want`. */
  dim(t: GgufTensorInfo | undefined, dim: number, want: number | undefined, meaning: string): void {
    if (!t || want === undefined) return;
    const got = t.shape[dim] ?? 1;
    if (got !== want) this.problems.push(`tensor ${t.name} has shape [${t.shape.join(', ')}]: dimension ${dim} should be ${want} (${meaning})`);
  }
}

/**
 * LLaVA-style graphs (models/llava.cpp): run layers 0..n-2 (or up to the deepest
 * feature layer), then the projector. Returns the projector's output size when known.
 */
function checkLlavaFamily(h: GgufHeader, type: string, hp: VisionHparams, t: TensorChecker, problems: string[]): number | undefined {
  const E = hp.nEmbd;
  const deepest = Math.max(-1, ...(hp.featureLayers ?? []));
  const ranLayers = deepest >= 0 ? deepest : Math.max(0, (hp.nLayer ?? 0) - 1);
  const patch = t.get('v.patch_embd.weight');
  t.dim(patch, 2, 3, 'RGB input channels');
  t.dim(patch, 3, E, 'the vision embedding size');
  t.dim(patch, 0, hp.patchSize, 'the patch size');
  t.dim(patch, 1, hp.patchSize, 'the patch size');
  t.shape(t.get('v.patch_embd.bias'), [E], 'the vision embedding size');
  const cls = t.get('v.class_embd');
  t.shape(cls, [E], 'the vision embedding size');
  for (const n of ['v.pre_ln', 'v.post_ln']) for (const part of ['weight', 'bias']) t.shape(t.get(`${n}.${part}`), [E], 'the vision embedding size');
  const pos = t.require('v.position_embd.weight', 'position embeddings');
  t.dim(pos, 0, E, 'the vision embedding size');
  if (pos && hp.imageSize && hp.patchSize) {
    const nPos = Math.floor(hp.imageSize / hp.patchSize) ** 2 + (cls ? 1 : 0);
    if ((pos.shape[1] ?? 1) < nPos) problems.push(`tensor ${pos.name} has ${pos.shape[1] ?? 1} positions but the image needs ${nPos}`);
  }
  if (E !== undefined && hp.nHead && !hp.headDim && E % hp.nHead !== 0) {
    problems.push(`the vision embedding size ${E} is not divisible by the head count ${hp.nHead}`);
  }

  // Attention width: heads x head size, which is the embedding size unless head_dim says otherwise.
  const A = hp.headDim && hp.nHead ? hp.headDim * hp.nHead : E;
  for (let il = 0; il < ranLayers; il++) {
    const b = `v.blk.${il}`;
    for (const p of ['attn_q', 'attn_k', 'attn_v']) {
      t.shape(t.require(`${b}.${p}.weight`), [E, A], 'embedding size x attention width');
      t.shape(t.get(`${b}.${p}.bias`), [A], 'the attention width');
    }
    t.shape(t.get(`${b}.attn_out.weight`), [A, E], 'attention width x embedding size');
    t.shape(t.get(`${b}.attn_out.bias`), [E], 'the vision embedding size');
    for (const n of ['ln1', 'ln2']) for (const part of ['weight', 'bias']) t.shape(t.get(`${b}.${n}.${part}`), [E], 'the vision embedding size');
    checkFfnPair(t, b, E, problems);
    // Biases move with their weights when clip.cpp swaps up and down, so each matches its own.
    for (const n of ['ffn_up', 'ffn_down', 'ffn_gate']) t.shape(t.get(`${b}.${n}.bias`), [t.get(`${b}.${n}.weight`)?.shape[1]], `the output size of ${b}.${n}.weight`);
    const gate = t.get(`${b}.ffn_gate.weight`);
    if (gate) t.shape(gate, [E, t.get(`${b}.ffn_up.weight`)?.shape[1]], 'the shape of ffn_up.weight');
  }

  if (type === 'mlp') {
    const m0 = t.require('mm.0.weight', 'the first projector layer');
    const m0b = t.require('mm.0.bias');
    if (!hp.featureLayers?.length) t.dim(m0, 0, E, 'the vision embedding size');
    t.shape(m0b, [m0?.shape[1]], 'the output size of mm.0.weight');
    if (t.get('mm.3.weight')) {
      // clip.cpp switches "mlp" with an mm.3 layer to its normalised variant (Yi-VL style).
      for (const n of ['mm.1.weight', 'mm.1.bias', 'mm.3.bias', 'mm.4.weight', 'mm.4.bias']) t.require(n);
      return t.get('mm.3.bias')?.shape[0];
    }
    // mm.2 is optional in the graph, but libmtmd reads its shape to size the output.
    const m2 = t.require('mm.2.weight', 'the second projector layer');
    const m2b = t.require('mm.2.bias');
    t.shape(m2, [m0?.shape[1], undefined], 'the output size of mm.0.weight x the text embedding size');
    t.shape(m2b, [m2?.shape[1]], 'the output size of mm.2.weight');
    return m2?.shape[1];
  }

  // MobileVLM's projectors hard-code a 24x24 patch grid.
  const list = type === 'ldp' ? LDP_TENSORS : LDPV2_TENSORS;
  for (const n of list) t.require(n);
  if (hp.imageSize && hp.patchSize && Math.floor(hp.imageSize / hp.patchSize) !== 24) {
    problems.push(`projector type ${type} needs a 24x24 patch grid, but image_size/patch_size is ${hp.imageSize}/${hp.patchSize}`);
  }
  return t.get(type === 'ldp' ? 'mm.model.mb_block.1.block.2.1.bias' : 'mm.model.peg.0.bias')?.shape[0];
}

// clip.cpp swaps ffn_up/ffn_down of old conversions when ffn_down's input is n_embd;
// either orientation is fine as long as the pair chains E -> F -> E.
function checkFfnPair(t: TensorChecker, b: string, E: number | undefined, problems: string[]): void {
  let up = t.get(`${b}.ffn_up.weight`);
  let down = t.get(`${b}.ffn_down.weight`);
  if (!up || !down || E === undefined) return;
  if (down.shape[0] === E) [up, down] = [down, up];
  const ok = up.shape[0] === E && down.shape[0] === (up.shape[1] ?? 1) && (down.shape[1] ?? 1) === E;
  if (!ok) {
    problems.push(`tensors ${b}.ffn_up.weight [${up.shape.join(', ')}] and ${b}.ffn_down.weight [${down.shape.join(', ')}] do not form an ${E} -> n_ff -> ${E} feed-forward block`);
  }
}
