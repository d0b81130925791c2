/**
 * @internal
 * Gathers a checkpoint's tensors under their GGUF names and works out the BLIP-2
 * hyperparameters: from tensor shapes always, from a Hugging Face config.json for what
 * shapes cannot tell (head counts, LayerNorm eps), with LAVIS / MiniGPT-4 facts otherwise.
 */
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { blockIndex, describeSources, mapTensorName, type MappedName } from './names.js';
import type { TensorSource } from './source.js';

/** The checkpoint tensor(s) behind one GGUF tensor; `q`/`v` are EVA's separate attention biases. */
export interface Slot {
  whole?: TensorSource;
  q?: TensorSource;
  v?: TensorSource;
  scheme: MappedName['scheme'];
}

/** Prompt templates the runtime knows (docs/blip2-gguf.md). */
export type Blip2PromptTemplate = 'minigpt4-v0' | 'minigpt4-llama2' | 'none';

/** Everything the GGUF's keys say. */
export interface Blip2Hparams {
  variant: 'qformer' | 'patch_group';
  imageSize: number;
  patchSize: number;
  vision: { width: number; blocks: number; heads: number; ff: number; eps: number; lnVisionEps: number };
  qformer?: { hidden: number; blocks: number; heads: number; ff: number; eps: number; crossFreq: number; queries: number };
  inputGroup: number;
  outputLength: number;
  promptTemplate: Blip2PromptTemplate;
  name: string;
}

/** Overrides for what cannot be read from the inputs. */
export interface HparamOptions {
  variant?: 'qformer' | 'patch_group';
  promptTemplate?: Blip2PromptTemplate;
  lnVisionEps?: number;
  visionHeads?: number;
  qformerHeads?: number;
  visionBlocks?: number;
  name?: string;
}

// LAVIS / MiniGPT-4 constants (eva_vit.py, blip2.py, BERT config): see MINIGPT4-SPEC.md.
const EVA_HEAD_DIM = 88;
const BERT_HEAD_DIM = 64;
const LAVIS_EPS = { vision: 1e-6, lnVision: 1e-5, qformer: 1e-12 };
// transformers' Blip2VisionConfig / Blip2QFormerConfig defaults, used when config.json omits a key.
const HF_DEFAULT_EPS = { vision: 1e-6, qformer: 1e-12 };

const loadErr = (msg: string) => new ModelLoadError('ERR_MODEL_LOAD', msg);

/**
 * Group the tensors by GGUF name; a later tensor for the same name replaces an earlier one,
 * as a later checkpoint overrides an earlier one in LAVIS. Returns the names nothing maps to.
 */
export function collectSlots(tensors: readonly TensorSource[]): { slots: Map<string, Slot>; ignored: string[] } {
  const slots = new Map<string, Slot>();
  const ignored: string[] = [];
  for (const t of tensors) {
    const m = mapTensorName(t.name);
    if (!m) { ignored.push(t.name); continue; }
    const slot = slots.get(m.target);
    if (m.part) {
      const next: Slot = slot && !slot.whole ? { ...slot, scheme: m.scheme } : { scheme: m.scheme };
      next[m.part] = t;
      slots.set(m.target, next);
    } else {
      slots.set(m.target, { whole: t, scheme: m.scheme });
    }
  }
  return { slots, ignored };
}

/** The GGUF-order (`ne`) shape of a source tensor, dropping leading PyTorch 1-dims beyond `rank`. */
export function neOf(src: TensorSource, rank: number): number[] {
  const ne = [...src.shape].reverse();
  while (ne.length > rank && ne[ne.length - 1] === 1) ne.pop();
  return ne;
}

/** The one tensor of a slot, or a missing-tensor error naming the checkpoint names to look for. */
export function need(slots: Map<string, Slot>, target: string): TensorSource {
  const s = slots.get(target);
  if (!s?.whole) throw loadErr(`missing tensor ${describeSources(target)} (GGUF ${target})`);
  return s.whole;
}

/** Work out the hyperparameters; throws naming the tensor or option when the inputs disagree. */
export function inferHparams(
  slots: Map<string, Slot>, config: Record<string, unknown> | undefined, opts: HparamOptions,
): Blip2Hparams {
  const hf = slots.get('v.class_embd')?.scheme === 'hf';
  const vc = sub(config, 'vision_config');
  const qc = sub(config, 'qformer_config');

  const cls = need(slots, 'v.class_embd');
  const [width] = rank(cls, 1);
  const patch = need(slots, 'v.patch_embd.weight');
  const [patchSize, p1, channels, pw] = rank(patch, 4);
  if (p1 !== patchSize || channels !== 3 || pw !== width) throw shapeErr(patch, `[${width}, 3, P, P]`);
  const pos = need(slots, 'v.position_embd');
  const [posWidth, tokens] = rank(pos, 2);
  const side = Math.round(Math.sqrt(tokens - 1));
  if (posWidth !== width || side * side !== tokens - 1) throw shapeErr(pos, `[1, 1 + n*n, ${width}]`);
  const imageSize = side * patchSize;
  checkConfig(vc, 'vision_config', { hidden_size: width, patch_size: patchSize, image_size: imageSize });

  let blocks = countBlocks(slots, 'v');
  if (blocks === 0) throw loadErr(`no ViT blocks found (looked for ${describeSources('v.blk.0.attn_qkv.weight')})`);
  // LAVIS builds EVA ViT-g with 39 blocks and loads the 40-block EVA-CLIP checkpoint
  // with strict=False, so the last block is never used.
  if (!hf && width === 1408 && blocks === 40) blocks = 39;
  const cfgBlocks = num(vc, 'num_hidden_layers');
  const wanted = opts.visionBlocks ?? cfgBlocks;
  if (wanted !== undefined) {
    if (wanted > blocks) throw loadErr(`${opts.visionBlocks !== undefined ? 'visionBlocks' : 'vision_config.num_hidden_layers'} is ${wanted}, but the checkpoint has ${blocks} ViT blocks`);
    blocks = wanted;
  }
  const ff = rank(need(slots, 'v.blk.0.ffn_up.weight'), 2)[1];
  checkConfig(vc, 'vision_config', { intermediate_size: ff });
  const heads = headCount(width, opts.visionHeads, num(vc, 'num_attention_heads'), EVA_HEAD_DIM, 'visionHeads', 'ViT width');
  const visionEps = hf ? num(vc, 'layer_norm_eps') ?? HF_DEFAULT_EPS.vision : LAVIS_EPS.vision;
  const lnVisionEps = opts.lnVisionEps ?? (hf ? visionEps : LAVIS_EPS.lnVision);

  const proj = need(slots, 'proj.weight');
  const [projIn, outputLength] = rank(proj, 2);
  const hasQuery = slots.has('qf.query_tokens');
  const variant = opts.variant ?? (hasQuery ? 'qformer' : 'patch_group');

  let qformer: Blip2Hparams['qformer'];
  let inputGroup = 1;
  if (variant === 'qformer') {
    const qt = need(slots, 'qf.query_tokens');
    const [hidden, queries] = rank(qt, 2);
    const qBlocks = countBlocks(slots, 'qf');
    if (qBlocks === 0) throw loadErr(`no Q-Former layers found (looked for ${describeSources('qf.blk.0.self_q.weight')})`);
    const crossFreq = crossFrequency(slots, qBlocks);
    const qff = rank(need(slots, 'qf.blk.0.ffn_up.weight'), 2)[1];
    const qHeads = headCount(hidden, opts.qformerHeads, num(qc, 'num_attention_heads'), BERT_HEAD_DIM, 'qformerHeads', 'Q-Former hidden size');
    checkConfig(qc, 'qformer_config', {
      hidden_size: hidden, num_hidden_layers: qBlocks, intermediate_size: qff, cross_attention_frequency: crossFreq, encoder_hidden_size: width,
    });
    checkConfig(config, 'config', { num_query_tokens: queries });
    qformer = {
      hidden, blocks: qBlocks, heads: qHeads, ff: qff, crossFreq, queries,
      eps: hf ? num(qc, 'layer_norm_eps') ?? HF_DEFAULT_EPS.qformer : LAVIS_EPS.qformer,
    };
    if (projIn !== hidden) throw shapeErr(proj, `[D, ${hidden}] (input = Q-Former hidden size)`);
  } else {
    if (projIn % width !== 0) throw shapeErr(proj, `[D, g * ${width}] (input = g ViT tokens of width ${width})`);
    inputGroup = projIn / width;
    if ((side * side) % inputGroup !== 0) throw shapeErr(proj, `an input group dividing the ${side * side} patches, not ${inputGroup}`);
  }
  const text = sub(config, 'text_config');
  checkConfig(text, 'text_config', { hidden_size: outputLength });

  const projScheme = slots.get('proj.weight')!.scheme;
  const promptTemplate = opts.promptTemplate
    ?? (variant === 'patch_group' ? 'minigpt4-llama2' : projScheme === 'lavis' ? 'minigpt4-v0' : 'none');
  const name = opts.name
    ?? (variant === 'patch_group' ? 'MiniGPT-4 (Llama 2) projector' : projScheme === 'lavis' ? 'MiniGPT-4 (Vicuna) projector' : `${typeof config?.model_type === 'string' ? config.model_type : 'BLIP-2'} projector`);
  return {
    variant, imageSize, patchSize, inputGroup, outputLength, promptTemplate, name, qformer,
    vision: { width, blocks, heads, ff, eps: visionEps, lnVisionEps },
  };
}

function rank(src: TensorSource, r: number): number[] {
  const ne = neOf(src, r);
  if (ne.length !== r) throw loadErr(`tensor ${src.name} in ${src.file} has shape [${src.shape.join(', ')}], expected ${r} dimensions`);
  return ne;
}

function shapeErr(src: TensorSource, expected: string): ModelLoadError {
  return loadErr(`tensor ${src.name} in ${src.file} has shape [${src.shape.join(', ')}], expected ${expected}`);
}

function countBlocks(slots: Map<string, Slot>, tower: 'v' | 'qf'): number {
  let max = -1;
  for (const name of slots.keys()) {
    const b = blockIndex(name);
    if (b?.tower === tower && b.index > max) max = b.index;
  }
  return max + 1;
}

// Layer i has cross-attention when i % f == 0; f is the gap between the first two such layers.
function crossFrequency(slots: Map<string, Slot>, blocks: number): number {
  const has = (i: number) => [...slots.keys()].some((n) => n.startsWith(`qf.blk.${i}.cross_`));
  const layers = Array.from({ length: blocks }, (_, i) => i).filter(has);
  if (layers[0] !== 0) throw loadErr(`Q-Former layer 0 has no cross-attention (${describeSources('qf.blk.0.cross_q.weight')})`);
  const f = layers.length > 1 ? layers[1] : blocks;
  for (let i = 0; i < blocks; i++) {
    if ((i % f === 0) !== has(i)) {
      throw loadErr(`Q-Former cross-attention layers [${layers.join(', ')}] do not repeat every ${f} layers; ` +
        `${i % f === 0 ? 'missing' : 'unexpected'} ${describeSources(`qf.blk.${i}.cross_q.weight`)}`);
    }
  }
  return f;
}

function headCount(width: number, option: number | undefined, fromConfig: number | undefined, headDim: number, optName: string, what: string): number {
  const heads = option ?? fromConfig ?? (width % headDim === 0 ? width / headDim : undefined);
  if (heads === undefined) {
    throw new InvalidArgumentError(`cannot tell the head count: the ${what} ${width} is not a multiple of ${headDim}; pass ${optName}`);
  }
  if (!Number.isInteger(heads) || heads < 1 || width % heads !== 0) {
    throw new InvalidArgumentError(`${option !== undefined ? optName : 'the config head count'} ${heads} does not divide the ${what} ${width}`);
  }
  return heads;
}

function sub(config: Record<string, unknown> | undefined, key: string): Record<string, unknown> | undefined {
  const v = config?.[key];
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function num(o: Record<string, unknown> | undefined, key: string): number | undefined {
  const v = o?.[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

// A config.json value that contradicts the tensors means the wrong config or weights.
function checkConfig(o: Record<string, unknown> | undefined, where: string, expected: Record<string, number>): void {
  for (const [key, value] of Object.entries(expected)) {
    const got = num(o, key);
    if (got !== undefined && got !== value) {
      throw loadErr(`config.json ${where === 'config' ? '' : `${where}.`}${key} is ${got}, but the tensors say ${value}`);
    }
  }
}
