/**
 * @internal
 * config.json of a Hugging Face LLaMA checkpoint: the architecture check, the dimensions
 * the tensors are checked against, and the `llama.*` keys in the order and with the types
 * llama.cpp's converter writes them (TextModel / LlamaModel.set_gguf_parameters). The
 * config is read as it is on disk, as the script does when transformers' AutoConfig is
 * unavailable: keys transformers would add with default values are not written.
 */
import { ModelLoadError } from '../errors.js';
import { kv } from '../gguf/write.js';
import type { GgufMetadataEntry } from '../gguf/types.js';
import type { LlamaShapes } from './llama-tensors.js';

type Json = Record<string, unknown>;

/** The architectures (config.json `architectures[0]`) this converter handles. */
export const LLAMA_ARCHITECTURES = ['LlamaForCausalLM', 'LLaMAForCausalLM', 'LlamaModel'] as const;

/** What config.json says, as the converter uses it. */
export interface LlamaConfig extends LlamaShapes {
  architecture: string;
  /** The merged hparams (text_config lifted to the top, as the script does). */
  hparams: Json;
  /** True for `LlamaModel` checkpoints, whose tensor names lack the `model.` prefix. */
  prefixModel: boolean;
}

const bad = (file: string, why: string): ModelLoadError => new ModelLoadError('ERR_MODEL_LOAD', `${file}: ${why}`);

// find_hparam: the first key present wins, even when it holds null.
function find(hp: Json, keys: string[]): unknown {
  const key = keys.find((k) => Object.hasOwn(hp, k));
  return key === undefined ? undefined : hp[key];
}

function positiveInt(file: string, hp: Json, keys: string[], required: true): number;
function positiveInt(file: string, hp: Json, keys: string[], required: false): number | undefined;
function positiveInt(file: string, hp: Json, keys: string[], required: boolean): number | undefined {
  const v = find(hp, keys);
  if (v === undefined || v === null) {
    if (required) throw bad(file, `has no ${keys.join(' / ')}`);
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad(file, `${keys.find((k) => Object.hasOwn(hp, k))} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** Read and check config.json (already parsed). Refuses other architectures, MoE and pre-quantized checkpoints. */
export function readLlamaConfig(file: string, config: Json): LlamaConfig {
  let hp: Json = { ...config };
  if (hp.text_config !== null && typeof hp.text_config === 'object' && !Array.isArray(hp.text_config)) hp = { ...hp, ...(hp.text_config as Json) };
  const textArch = (config.text_config as Json | undefined)?.architectures;
  const arches = Array.isArray(textArch) ? textArch : config.architectures;
  const architecture = Array.isArray(arches) && typeof arches[0] === 'string' ? arches[0] : undefined;
  if (architecture === undefined) throw bad(file, 'names no architecture ("architectures" is missing)');
  if (!(LLAMA_ARCHITECTURES as readonly string[]).includes(architecture)) {
    throw bad(file, `architecture ${architecture} is not supported: the LLaMA converter handles ${LLAMA_ARCHITECTURES.join(', ')}`);
  }
  if (find(hp, ['num_local_experts', 'num_experts', 'n_routed_experts']) != null) throw bad(file, 'mixture-of-experts LLaMA models are not supported');
  if (hp.quantization_config != null) throw bad(file, 'the checkpoint is already quantized (quantization_config); convert the original f16/bf16/f32 weights');
  if (find(hp, ['draft_vocab_size']) != null) throw bad(file, 'EAGLE-3 draft models are not supported');

  const blocks = positiveInt(file, hp, ['n_layers', 'num_hidden_layers', 'n_layer', 'num_layers'], true);
  const embd = positiveInt(file, hp, ['hidden_size', 'n_embd', 'dim'], true);
  const ff = positiveInt(file, hp, ['prefix_dense_intermediate_size', 'dense_intermediate_size', 'intermediate_size', 'n_inner', 'hidden_dim'], true);
  const heads = positiveInt(file, hp, ['num_attention_heads', 'n_head', 'n_heads'], true);
  // transformers' LlamaConfig defaults the KV heads to the heads (configs before GQA omit them).
  const headsKv = positiveInt(file, hp, ['n_kv_heads', 'num_key_value_heads'], false) ?? heads;
  const vocab = positiveInt(file, hp, ['vocab_size'], true);
  const headDimRaw = positiveInt(file, hp, ['head_dim'], false);
  if (headDimRaw === undefined && embd % heads !== 0) throw bad(file, `hidden_size ${embd} is not a multiple of num_attention_heads ${heads}`);
  const headDim = headDimRaw ?? embd / heads;
  if (heads % headsKv !== 0) throw bad(file, `num_attention_heads ${heads} is not a multiple of num_key_value_heads ${headsKv}`);
  if (headDim % 2 !== 0) throw bad(file, `the head size ${headDim} is odd, so rotary pairs cannot be formed`);
  return { architecture, hparams: hp, prefixModel: architecture === 'LlamaModel', blocks, embd, ff, heads, headsKv, headDim, vocab };
}

/** Output file types as general.file_type (llama_ftype). */
export const FILE_TYPE = { f32: 0, f16: 1, bf16: 32 } as const;

/** The `llama.*` keys, then general.file_type, llama.vocab_size and llama.rope.dimension_count. */
export function hparamMetadata(file: string, cfg: LlamaConfig, fileType: number): GgufMetadataEntry[] {
  const hp = cfg.hparams;
  const out: GgufMetadataEntry[] = [];
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  const u32 = (key: string, v: unknown): void => { if (num(v)) out.push(kv.u32(`llama.${key}`, v)); };
  const f32 = (key: string, v: unknown): void => { if (num(v)) out.push(kv.f32(`llama.${key}`, v)); };

  out.push(kv.u32('llama.block_count', cfg.blocks));
  u32('context_length', find(hp, ['max_position_embeddings', 'n_ctx', 'n_positions', 'max_length', 'max_sequence_length', 'model_max_length']));
  u32('embedding_length', cfg.embd);
  u32('feed_forward_length', cfg.ff);
  u32('attention.head_count', cfg.heads);
  u32('attention.head_count_kv', find(hp, ['num_key_value_heads', 'n_kv_heads']));
  if (hp.is_causal === false) out.push(kv.bool('llama.attention.causal', false));

  const rope = ropeParameters(hp);
  const ropeType = rope.rope_type;
  if (ropeType !== undefined && ropeType !== null) {
    const factor = rope.factor;
    if (ropeType === 'linear' && num(factor)) {
      out.push(kv.str('llama.rope.scaling.type', 'linear'));
      f32('rope.scaling.factor', factor);
    } else if (ropeType === 'yarn' && num(factor)) {
      out.push(kv.str('llama.rope.scaling.type', 'yarn'));
      f32('rope.scaling.factor', factor);
      u32('rope.scaling.original_context_length', rope.original_max_position_embeddings);
      f32('rope.scaling.yarn_ext_factor', rope.extrapolation_factor);
      f32('rope.scaling.yarn_attn_factor', rope.attention_factor ?? rope.attn_factor);
      f32('rope.scaling.yarn_beta_fast', rope.beta_fast);
      f32('rope.scaling.yarn_beta_slow', rope.beta_slow);
    } else if (ropeType === 'su' || ropeType === 'longrope') {
      out.push(kv.str('llama.rope.scaling.type', 'longrope'));
    } else if (typeof ropeType === 'string' && ropeType.toLowerCase() === 'llama3') {
      throw bad(file, 'Llama 3 RoPE scaling (rope_type "llama3") is not supported');
    }
  }
  f32('rope.freq_base', rope.rope_theta);
  if (find(hp, ['local_rope_theta', 'rope_local_theta', 'rope_theta_local', 'swa_rope_theta', 'rope_local_base_freq']) != null) {
    throw bad(file, 'sliding-window RoPE settings are not supported');
  }
  f32('attention.layer_norm_rms_epsilon', find(hp, ['rms_norm_eps', 'norm_eps']));
  f32('attention.layer_norm_epsilon', find(hp, ['layer_norm_eps', 'layer_norm_epsilon', 'norm_epsilon']));
  if (num(hp.head_dim)) {
    u32('attention.key_length', hp.head_dim);
    u32('attention.value_length', hp.head_dim);
  }
  out.push(kv.u32('general.file_type', fileType));
  out.push(kv.u32('llama.vocab_size', cfg.vocab));
  out.push(kv.u32('llama.rope.dimension_count', num(hp.head_dim) ? hp.head_dim : Math.floor(cfg.embd / cfg.heads)));
  return out;
}

// TextModel.__init__: rope_parameters (or rope_scaling) with the global settings mirrored in.
function ropeParameters(hp: Json): Json {
  const given = Object.hasOwn(hp, 'rope_parameters') ? hp.rope_parameters : hp.rope_scaling;
  const rope: Json = given !== null && typeof given === 'object' && !Array.isArray(given) ? { ...(given as Json) } : {};
  if (!('full_attention' in rope) && !('sliding_attention' in rope)) {
    const theta = find(hp, ['global_rope_theta', 'rope_global_theta', 'rope_theta_global', 'rope_theta', 'rotary_emb_base']);
    if (!('rope_theta' in rope) && theta != null) rope.rope_theta = theta;
    if (!('rope_type' in rope) && rope.type != null) rope.rope_type = rope.type;
    const partial = find(hp, ['partial_rotary_factor', 'rope_pct', 'rope_percent']);
    if (!('partial_rotary_factor' in rope) && partial != null) rope.partial_rotary_factor = partial;
    const orig = find(hp, ['original_max_position_embeddings']);
    if (!('original_max_position_embeddings' in rope) && orig != null) rope.original_max_position_embeddings = orig;
  }
  const full = rope.full_attention;
  return full !== null && typeof full === 'object' ? (full as Json) : rope;
}
