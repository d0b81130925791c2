/**
 * Converts BLIP-2 image encoders (EVA ViT + Q-Former + projection) into minigpt-node's
 * BLIP-2 projector GGUF (docs/blip2-gguf.md): from Hugging Face `Blip2ForConditionalGeneration`
 * / `InstructBlipForConditionalGeneration` directories or safetensors, or from the LAVIS /
 * MiniGPT-4 `.pth` checkpoints (`eva_vit_g.pth` + `blip2_pretrained_flant5xxl.pth` +
 * `pretrained_minigpt4*.pth`), read without Python.
 * @module
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { writeGguf, kv } from '../gguf/write.js';
import { writeAtomically } from './write-atomically.js';
import type { GgufMetadataEntry } from '../gguf/types.js';
import { checkKeys, invalid, optFunction, optInteger, optNumber, optString } from '../validate.js';
import { collectSlots, inferHparams, type Blip2Hparams, type Blip2PromptTemplate } from './blip2-hparams.js';
import { blip2TensorType, planTensors, type Blip2FileType } from './blip2-tensors.js';
import { openInputs } from './inputs.js';

export { blip2TensorType, type Blip2FileType, type Blip2TensorRole } from './blip2-tensors.js';
export type { Blip2Hparams, Blip2PromptTemplate } from './blip2-hparams.js';

/** Options of {@link convertBlip2}. */
export interface ConvertBlip2Options {
  /**
   * Hugging Face model directories, `.safetensors` files or `model.safetensors.index.json`,
   * and/or `torch.save` checkpoints (`.pth`); tensors of later inputs replace those of
   * earlier ones with the same name.
   */
  inputs: string[];
  /** The GGUF file to write (replaced only once the new one is complete). */
  output: string;
  /** Type of the ViT and Q-Former matrices. Default `f16`. */
  type?: Blip2FileType;
  /** Default: `minigpt4-v0` for a Q-Former with `llama_proj`, `minigpt4-llama2` for `patch_group`, else `none`. */
  promptTemplate?: Blip2PromptTemplate;
  /** Default: `qformer` when the inputs have `query_tokens`, else `patch_group` (MiniGPT-4 Llama 2). */
  variant?: 'qformer' | 'patch_group';
  /** eps of `ln_vision`. Default 1e-5 for LAVIS names, the config's `layer_norm_eps` for HF. */
  lnVisionEps?: number;
  /** ViT heads when neither config.json nor the width (a multiple of 88) tells. */
  visionHeads?: number;
  /** Q-Former heads when neither config.json nor the hidden size (a multiple of 64) tells. */
  qformerHeads?: number;
  /** ViT blocks to keep (the first N), for checkpoints with more blocks than the model uses. */
  visionBlocks?: number;
  /** `general.name`. */
  name?: string;
  /** Called before each tensor is written, and once at the end with done === total. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link convertBlip2} wrote. */
export interface ConvertBlip2Result {
  /** Tensors written. */
  tensors: number;
  /** Size of the GGUF file. */
  bytes: number;
  /** Input tensors the image path does not use (text embeddings, the language model, ...). */
  ignored: string[];
  /** The hyperparameters written as keys. */
  hparams: Blip2Hparams;
}

const FILE_TYPES: readonly Blip2FileType[] = ['f32', 'f16', 'q8_0', 'q5_0', 'q5_1', 'q4_0', 'q4_1'];
const TEMPLATES: readonly Blip2PromptTemplate[] = ['minigpt4-v0', 'minigpt4-llama2', 'none'];
const VARIANTS = ['qformer', 'patch_group'] as const;
const OPTION_KEYS = ['inputs', 'output', 'type', 'promptTemplate', 'variant', 'lnVisionEps', 'visionHeads', 'qformerHeads', 'visionBlocks', 'name', 'onProgress'];

// docs/blip2-gguf.md: the BLIP-2 eval processor's normalization.
const IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073];
const IMAGE_STD = [0.26862954, 0.26130258, 0.27577711];

/**
 * Write the BLIP-2 projector GGUF for the given checkpoints. Tensors are read, converted
 * and written one at a time, so memory stays near the size of the largest tensor.
 *
 * Rejects with `InvalidArgumentError` (`ERR_INVALID_ARGUMENT`) for bad options and
 * `ModelLoadError` (`ERR_MODEL_LOAD`) for unreadable or inconsistent inputs (a missing
 * tensor, a wrong shape, a non-zero key bias), naming the tensor.
 */
export async function convertBlip2(options: ConvertBlip2Options): Promise<ConvertBlip2Result> {
  const o = validate(options);
  const inputs = await openInputs(o.inputs);
  try {
    const { slots, ignored } = collectSlots(inputs.tensors);
    const hp = inferHparams(slots, inputs.config, o);
    const plan = await planTensors(slots, hp);
    const tensors = plan.map((t, i) => ({
      name: t.name,
      type: blip2TensorType(t.role, t.shape[0], o.type),
      shape: t.shape,
      data: async () => {
        o.onProgress?.(i, plan.length);
        return t.read();
      },
    }));
    await writeAtomically(o.output, (partial) => writeGguf(partial, { metadata: metadataFor(hp), tensors }));
    o.onProgress?.(plan.length, plan.length);
    // Also report mapped tensors the model does not use: a Q-Former under patch_group, ViT blocks past visionBlocks.
    const planned = new Set(plan.map((t) => t.name));
    const unused = [...slots].filter(([target]) => !planned.has(target)).flatMap(([, s]) => [s.whole, s.q, s.v]).filter((t) => t !== undefined).map((t) => t.name);
    return { tensors: plan.length, bytes: (await stat(o.output)).size, ignored: [...ignored, ...unused], hparams: hp };
  } finally {
    await inputs.close();
  }
}

function metadataFor(hp: Blip2Hparams): GgufMetadataEntry[] {
  const v = hp.vision;
  const meta = [
    kv.str('general.architecture', 'blip2'),
    kv.str('general.name', hp.name),
    kv.str('blip2.variant', hp.variant),
    kv.str('blip2.prompt_template', hp.promptTemplate),
    kv.u32('blip2.vision.image_size', hp.imageSize),
    kv.u32('blip2.vision.patch_size', hp.patchSize),
    kv.u32('blip2.vision.embedding_length', v.width),
    kv.u32('blip2.vision.block_count', v.blocks),
    kv.u32('blip2.vision.attention.head_count', v.heads),
    kv.u32('blip2.vision.feed_forward_length', v.ff),
    kv.f32('blip2.vision.attention.layer_norm_epsilon', v.eps),
    kv.f32('blip2.vision.ln_vision_epsilon', v.lnVisionEps),
    kv.f32Array('blip2.vision.image_mean', IMAGE_MEAN),
    kv.f32Array('blip2.vision.image_std', IMAGE_STD),
  ];
  const q = hp.qformer;
  if (hp.variant === 'qformer' && q) {
    meta.push(
      kv.u32('blip2.qformer.embedding_length', q.hidden),
      kv.u32('blip2.qformer.block_count', q.blocks),
      kv.u32('blip2.qformer.attention.head_count', q.heads),
      kv.u32('blip2.qformer.feed_forward_length', q.ff),
      kv.f32('blip2.qformer.layer_norm_epsilon', q.eps),
      kv.u32('blip2.qformer.cross_attention_frequency', q.crossFreq),
      kv.u32('blip2.qformer.query_count', q.queries),
    );
  }
  meta.push(
    kv.u32('blip2.projection.input_group', hp.inputGroup),
    kv.u32('blip2.projection.output_length', hp.outputLength),
  );
  return meta;
}

type Validated = Required<Pick<ConvertBlip2Options, 'inputs' | 'output' | 'type'>> & Omit<ConvertBlip2Options, 'inputs' | 'output' | 'type'>;

function validate(options: ConvertBlip2Options): Validated {
  const o = checkKeys(options, OPTION_KEYS, 'convertBlip2 options');
  const inputs = o.inputs;
  if (!Array.isArray(inputs) || inputs.length === 0 || !inputs.every((p) => typeof p === 'string' && p.length > 0)) {
    throw invalid('a non-empty array of paths', 'inputs', inputs);
  }
  const output = optString(o, 'output');
  if (!output) throw invalid('a non-empty string', 'output', o.output);
  if (inputs.some((p) => resolve(p) === resolve(output))) throw new InvalidArgumentError(`output ${output} is also an input`);
  const oneOf = <T extends string>(key: string, allowed: readonly T[]): T | undefined => {
    const v = o[key];
    if (v !== undefined && !allowed.includes(v as T)) throw invalid(`one of ${allowed.map((a) => `'${a}'`).join(', ')}`, key, v);
    return v as T | undefined;
  };
  return {
    inputs: inputs as string[],
    output,
    type: oneOf('type', FILE_TYPES) ?? 'f16',
    promptTemplate: oneOf('promptTemplate', TEMPLATES),
    variant: oneOf('variant', VARIANTS),
    lnVisionEps: o.lnVisionEps === undefined ? undefined : optNumber(o, 'lnVisionEps', 0, 1, 0),
    visionHeads: optInteger(o, 'visionHeads', 1, 1 << 16),
    qformerHeads: optInteger(o, 'qformerHeads', 1, 1 << 16),
    visionBlocks: optInteger(o, 'visionBlocks', 1, 1 << 16),
    name: optString(o, 'name'),
    onProgress: optFunction<(done: number, total: number) => void>(o, 'onProgress'),
  };
}
