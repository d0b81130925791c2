/**
 * @internal
 * Which checkpoint tensor becomes which GGUF tensor in a LLaMA conversion, in llama.cpp's
 * converter's order, with its GGUF type, ggml shape and the rotary row permutation of Q and
 * K; and the byte-level conversions (f32/f16/bf16, numpy's and ggml's rounding) that make
 * each tensor's data equal to what `convert_hf_to_gguf.py` writes.
 */
import { ModelLoadError } from '../errors.js';
import { GgmlType } from '../gguf/types.js';
import { DTYPE_SIZE, isDecodable, numel, refuseDtype, type SourceDtype, type TensorSource } from './source.js';

/** Output file type: the type of the 2-D weights (norms and biases stay f32, as in the script). */
export type LlamaOutType = 'f32' | 'f16' | 'bf16';

/** The dimensions the checkpoint must agree with. */
export interface LlamaShapes {
  blocks: number;
  embd: number;
  ff: number;
  heads: number;
  headsKv: number;
  headDim: number;
  vocab: number;
}

/** One tensor to write. */
export interface PlannedTensor {
  name: string;
  type: GgmlType;
  /** ggml order (innermost first): the checkpoint's shape reversed. */
  shape: number[];
  source: TensorSource;
  /** Heads to undo the rotary permutation over (q and k only). */
  permuteHeads?: number;
}

// TextModel.filter_tensors: vision/audio parts of multimodal checkpoints are not text tensors.
function isMultimodal(name: string): boolean {
  return /^(mlp|vit\.|vpm\.|siglip2\.|conformer\.|merger\.|resampler\.|sound_encoder\.|sound_projection\.|speech_embeddings\.)/.test(name) ||
    ['visual.', 'vision.', 'audio.', 'talker.', 'vision_', 'audio_', 'token2wav.', 'code2wav.', 'projector.', 'pre_mm_projector_norm',
      'image_newline', 'view_seperator', 'patch_embed', 'patch_embedding', 'patch_merger.', 'patch_merge_mlp.', 'model.connector.']
      .some((s) => name.includes(s));
}

/** The script's renames and skips of checkpoint names (filter_tensors); undefined = dropped. */
export function filterName(name: string): string | undefined {
  let n = name.replace('text_model.', '');
  if (isMultimodal(n)) return undefined;
  if (n.endsWith('e_score_correction_bias')) n = n.replace('e_score_correction_bias', 'e_score_correction.bias');
  return n.replace('language_model.', '');
}

const BLOCK_NAMES: Record<string, string> = {
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
  'input_layernorm': 'attn_norm',
  'post_attention_layernorm': 'ffn_norm',
};

/** gguf-py TensorNameMap for the Hugging Face LLaMA names; undefined for any other name. */
export function ggufName(hfName: string, blocks: number): string | undefined {
  const m = /^(.*)\.(weight|bias)$/.exec(hfName);
  if (!m) return undefined;
  const [, base, suffix] = m;
  if (base === 'model.embed_tokens') return `token_embd.${suffix}`;
  if (base === 'model.norm') return `output_norm.${suffix}`;
  if (base === 'lm_head') return `output.${suffix}`;
  const b = /^model\.layers\.(\d+)\.(.+)$/.exec(base);
  if (!b || !BLOCK_NAMES[b[2]] || Number(b[1]) >= blocks || String(Number(b[1])) !== b[1]) return undefined;
  return `blk.${b[1]}.${BLOCK_NAMES[b[2]]}.${suffix}`;
}

const fail = (msg: string): never => { throw new ModelLoadError('ERR_MODEL_LOAD', msg); };

/**
 * Map, check and order the checkpoint's tensors (already in the script's order: shard files
 * sorted, safetensors names sorted, torch state dicts in file order). Refuses an unknown
 * tensor, a wrong shape and a missing one, each named.
 */
export function planTensors(sources: TensorSource[], hp: LlamaShapes, outType: LlamaOutType, prefixModel: boolean): PlannedTensor[] {
  const byName = new Map<string, TensorSource>();
  for (const s of sources) {
    const n = filterName(s.name);
    // A later duplicate replaces the value but keeps the first one's place, as in a Python dict.
    if (n !== undefined) byName.set(n, s);
  }
  const expected = expectedShapes(hp);
  const plan: PlannedTensor[] = [];
  for (const [raw, source] of byName) {
    if (raw.endsWith('.attention.masked_bias') || raw.endsWith('.attention.bias') || raw.endsWith('.rotary_emb.inv_freq')) continue;
    const name = prefixModel ? `model.${raw}` : raw;
    const out = ggufName(name, hp.blocks);
    if (out === undefined) fail(`${source.file}: tensor "${source.name}" is not part of a LLaMA model (cannot map it to a GGUF tensor name)`);
    const want = expected.get(out!);
    if (!want) fail(`${source.file}: tensor "${source.name}" (${out}) is not used by this LLaMA configuration`);
    if (want!.length !== source.shape.length || want!.some((d, i) => d !== source.shape[i])) {
      fail(`${source.file}: tensor "${source.name}" has shape [${source.shape.join(', ')}], but config.json implies [${want!.join(', ')}]`);
    }
    if (!isDecodable(source.dtype)) refuseDtype(source.name, source.dtype, source.file);
    const isQ = name.endsWith('q_proj.weight') || name.endsWith('q_proj.bias');
    const isK = name.endsWith('k_proj.weight') || name.endsWith('k_proj.bias');
    const oneDim = source.shape.length <= 1;
    const type = oneDim || out!.endsWith('_norm.weight') || !out!.endsWith('.weight') ? GgmlType.F32
      : outType === 'f32' ? GgmlType.F32 : outType === 'f16' ? GgmlType.F16 : GgmlType.BF16;
    plan.push({
      name: out!, type, shape: [...source.shape].reverse(), source,
      permuteHeads: isQ ? hp.heads : isK ? hp.headsKv : undefined,
    });
  }
  const have = new Set(plan.map((t) => t.name));
  for (const [name] of expected) {
    if (have.has(name) || name.endsWith('.bias') || name === 'output.weight') continue;
    fail(`the checkpoint has no tensor for ${name} (expected ${hfNameOf(name)})`);
  }
  return plan;
}

function hfNameOf(gguf: string): string {
  if (gguf === 'token_embd.weight') return 'model.embed_tokens.weight';
  if (gguf === 'output_norm.weight') return 'model.norm.weight';
  const m = /^blk\.(\d+)\.(\w+)\.(weight|bias)$/.exec(gguf);
  const hf = m && Object.entries(BLOCK_NAMES).find(([, v]) => v === m[2]);
  return m && hf ? `model.layers.${m[1]}.${hf[0]}.${m[3]}` : gguf;
}

function expectedShapes(hp: LlamaShapes): Map<string, number[]> {
  const q = hp.heads * hp.headDim;
  const kv = hp.headsKv * hp.headDim;
  const m = new Map<string, number[]>([
    ['token_embd.weight', [hp.vocab, hp.embd]],
    ['output_norm.weight', [hp.embd]],
    ['output.weight', [hp.vocab, hp.embd]],
  ]);
  for (let i = 0; i < hp.blocks; i++) {
    const b = `blk.${i}`;
    m.set(`${b}.attn_q.weight`, [q, hp.embd]).set(`${b}.attn_q.bias`, [q]);
    m.set(`${b}.attn_k.weight`, [kv, hp.embd]).set(`${b}.attn_k.bias`, [kv]);
    m.set(`${b}.attn_v.weight`, [kv, hp.embd]).set(`${b}.attn_v.bias`, [kv]);
    m.set(`${b}.attn_output.weight`, [hp.embd, q]).set(`${b}.attn_output.bias`, [hp.embd]);
    m.set(`${b}.ffn_gate.weight`, [hp.ff, hp.embd]);
    m.set(`${b}.ffn_up.weight`, [hp.ff, hp.embd]);
    m.set(`${b}.ffn_down.weight`, [hp.embd, hp.ff]);
    m.set(`${b}.attn_norm.weight`, [hp.embd]);
    m.set(`${b}.ffn_norm.weight`, [hp.embd]);
  }
  return m;
}

/**
 * LlamaModel.permute: within each of `heads` groups of rows, row `j * half + i` moves to
 * `2 * i + j`, turning Hugging Face's rotate-half layout back into ggml's interleaved pairs.
 */
export function permuteRows(bytes: Uint8Array, rows: number, rowBytes: number, heads: number, what: string, out: Uint8Array = new Uint8Array(bytes.length)): Uint8Array {
  if (rows % (heads * 2) !== 0) fail(`${what}: ${rows} rows cannot be split into ${heads} heads of rotary pairs`);
  const headRows = rows / heads;
  const half = headRows / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * headRows;
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (base + j * half + i) * rowBytes;
        out.set(bytes.subarray(src, src + rowBytes), (base + 2 * i + j) * rowBytes);
      }
    }
  }
  return out;
}

/** f32 -> f16 as numpy's astype(float16) (npy_floatbits_to_halfbits): ties to even, NaN keeps its top payload bits. */
export function f32ToF16Numpy(src: Uint32Array, dst: Uint16Array): void {
  for (let k = 0; k < src.length; k++) {
    const f = src[k];
    const sign = (f >>> 16) & 0x8000;
    const exp = f & 0x7f800000;
    let h: number;
    if (exp >= 0x47800000) {
      if (exp === 0x7f800000 && (f & 0x7fffff) !== 0) {
        h = 0x7c00 + ((f & 0x7fffff) >>> 13);
        if (h === 0x7c00) h++;
      } else {
        h = 0x7c00;
      }
    } else if (exp <= 0x38000000) {
      if (exp < 0x33000000) {
        h = 0;
      } else {
        let sig = (0x800000 + (f & 0x7fffff)) >>> (113 - (exp >>> 23));
        if ((sig & 0x3fff) !== 0x1000 || (f & 0x7ff) !== 0) sig += 0x1000;
        h = sig >>> 13;
      }
    } else {
      let sig = f & 0x7fffff;
      if ((sig & 0x3fff) !== 0x1000) sig += 0x1000;
      h = ((exp - 0x38000000) >>> 13) + (sig >>> 13);
    }
    dst[k] = sign | h;
  }
}

/** f32 -> bf16 as ggml_compute_fp32_to_bf16 / gguf-py: NaN made quiet, else ties to even. */
export function f32ToBf16(src: Uint32Array, dst: Uint16Array): void {
  for (let k = 0; k < src.length; k++) {
    const u = src[k];
    dst[k] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 64 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
}

/** The bytes of one planned tensor in its GGUF type: raw copies where no rounding can differ. */
export async function tensorBytes(t: PlannedTensor): Promise<Uint8Array> {
  const src = t.source;
  const dtype = src.dtype as SourceDtype;
  const outSize = t.type === GgmlType.F32 ? 4 : 2;
  const sameType = storedAsIs(t);
  let bytes: Uint8Array;
  let elemSize: number;
  if (sameType && src.readRaw) {
    bytes = await src.readRaw();
    elemSize = DTYPE_SIZE[dtype];
    if (t.type === GgmlType.BF16) quietBf16NaNs(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2));
  } else {
    const values = await src.read();
    elemSize = outSize;
    if (t.type === GgmlType.F32) {
      bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    } else {
      const out = new Uint16Array(values.length);
      const u32 = new Uint32Array(values.buffer, values.byteOffset, values.length);
      if (t.type === GgmlType.F16) f32ToF16Numpy(u32, out);
      else f32ToBf16(u32, out);
      bytes = new Uint8Array(out.buffer);
    }
  }
  const n = numel(src.shape);
  if (bytes.length !== n * elemSize) fail(`${src.file}: tensor "${src.name}" read ${bytes.length} bytes, expected ${n * elemSize}`);
  if (t.permuteHeads !== undefined) {
    const rows = src.shape[0];
    bytes = permuteRows(bytes, rows, (n / rows) * elemSize, t.permuteHeads, `${src.file}: tensor "${src.name}"`);
  }
  return bytes;
}

/** True when the tensor's stored bytes are already its GGUF bytes (up to the row order and bf16 NaN quieting). */
export function storedAsIs(t: PlannedTensor): boolean {
  const d = t.source.dtype;
  return (t.type === GgmlType.F32 && d === 'F32') || (t.type === GgmlType.F16 && d === 'F16') || (t.type === GgmlType.BF16 && d === 'BF16');
}

/** A bf16 NaN re-encoded through ggml's rounding gets its quiet bit set. */
export function quietBf16NaNs(v: Uint16Array): void {
  for (let k = 0; k < v.length; k++) if ((v[k] & 0x7fff) > 0x7f80) v[k] |= 64;
}
