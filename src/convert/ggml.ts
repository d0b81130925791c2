/**
 * Re-wraps old GGML LLaMA files (`ggjt` v1-v3, `ggmf`, unversioned `ggml`: the 2023 files
 * minigpt4.cpp and llama.cpp used before GGUF, e.g. MiniGPT-4's Vicuna v0 7B/13B) as GGUF,
 * exactly as llama.cpp's own `convert_llama_ggml_to_gguf.py` does without
 * `--model-metadata-dir`: the same keys, vocabulary fix-ups and tensors, the tensor bytes
 * copied unchanged (quantized ones included).
 * @module
 */
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { AbortedError, InvalidArgumentError, MinigptError, ModelLoadError, throwIfAborted } from '../errors.js';
import { encodeGgufHeader, kv } from '../gguf/write.js';
import { GgmlType, ggmlTypeTraits } from '../gguf/types.js';
import { checkKeys, invalid, optFunction, optInteger, optNumber, optSignal, optString } from '../validate.js';
import { loadError } from './file-range.js';

/** Options of {@link convertGgml}. */
export interface ConvertGgmlOptions {
  /** The GGML file (`ggjt` v3 and older). */
  input: string;
  /** The GGUF file to write; written as `<output>.part` and renamed once complete. */
  output: string;
  /** `general.name`. Default: the input's file name, as the script does. */
  name?: string;
  /** `general.description`. Default: "converted from legacy GGJTv3 MOSTLY_Q4_0 format" (the file's format and type). */
  description?: string;
  /** `llama.context_length`; the files do not say. Default 2048 (LLaMA 1, Vicuna v0); use 4096 for Llama 2. */
  contextLength?: number;
  /** RMS norm epsilon; the files do not say. Default 5e-6, as the script; LLaMA 1 used 1e-6, Llama 2 1e-5. */
  eps?: number;
  /** Grouped-query attention factor (heads per KV head). Default 1; 8 for Llama 2 70B. */
  gqa?: number;
  /** Called as tensor data is written: bytes done and total bytes. */
  onProgress?: (done: number, total: number) => void;
  /** Stops between tensors; the partial file is removed and the promise rejects with `ERR_ABORTED`. */
  signal?: AbortSignal;
}

/** What {@link convertGgml} wrote. */
export interface ConvertGgmlResult {
  /** e.g. "GGJTv3". */
  format: string;
  /** The file's type, e.g. "MOSTLY_Q4_0". */
  fileType: string;
  tensors: number;
  bytes: number;
}

const FTYPES: Record<number, string> = {
  0: 'ALL_F32', 1: 'MOSTLY_F16', 2: 'MOSTLY_Q4_0', 3: 'MOSTLY_Q4_1', 4: 'MOSTLY_Q4_1_SOME_F16', 7: 'MOSTLY_Q8_0', 8: 'MOSTLY_Q5_0',
  9: 'MOSTLY_Q5_1', 10: 'MOSTLY_Q2_K', 11: 'MOSTLY_Q3_K_S', 12: 'MOSTLY_Q3_K_M', 13: 'MOSTLY_Q3_K_L', 14: 'MOSTLY_Q4_K_S',
  15: 'MOSTLY_Q4_K_M', 16: 'MOSTLY_Q5_K_S', 17: 'MOSTLY_Q5_K_M', 18: 'MOSTLY_Q6_K',
};

const BLOCK_NAMES: Record<string, string> = {
  'attention.wq': 'attn_q', 'attention.wk': 'attn_k', 'attention.wv': 'attn_v', 'attention.wo': 'attn_output',
  'feed_forward.w1': 'ffn_gate', 'feed_forward.w2': 'ffn_down', 'feed_forward.w3': 'ffn_up',
  attention_norm: 'attn_norm', ffn_norm: 'ffn_norm',
};

// gguf-py TensorNameMap, LLaMA's original (llama-pth) names.
function ggufName(name: string, blocks: number): string | undefined {
  const m = /^(.*)\.(weight|bias)$/.exec(name);
  if (!m) return undefined;
  const [, base, suffix] = m;
  const top: Record<string, string> = { tok_embeddings: 'token_embd', norm: 'output_norm', output: 'output' };
  if (top[base]) return `${top[base]}.${suffix}`;
  const b = /^layers\.(\d+)\.(.+)$/.exec(base);
  if (!b || !BLOCK_NAMES[b[2]] || Number(b[1]) >= blocks || String(Number(b[1])) !== b[1]) return undefined;
  return `blk.${b[1]}.${BLOCK_NAMES[b[2]]}.${suffix}`;
}

interface GgmlTensor {
  name: string;
  type: GgmlType;
  dims: number[];
  start: number;
  bytes: number;
}

class Reader {
  private buf = new Uint8Array(0);
  private bufStart = 0;
  pos = 0;
  constructor(private readonly fh: FileHandle, readonly size: number, readonly file: string) {}

  private async need(n: number): Promise<void> {
    if (this.pos + n > this.size) throw new ModelLoadError('ERR_MODEL_LOAD', `${this.file}: the file ends early at byte ${this.pos} (truncated?)`);
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.buf.length) return;
    const len = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
    this.buf = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const { bytesRead } = await this.fh.read(this.buf, done, len - done, this.pos + done);
      if (bytesRead === 0) throw new ModelLoadError('ERR_MODEL_LOAD', `${this.file}: the file ends early (truncated?)`);
      done += bytesRead;
    }
    this.bufStart = this.pos;
  }

  async bytes(n: number): Promise<Uint8Array> {
    await this.need(n);
    const at = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(at, at + n);
  }

  async u32s(n: number): Promise<number[]> {
    const b = await this.bytes(4 * n);
    const v = new DataView(b.buffer, b.byteOffset, b.length);
    return Array.from({ length: n }, (_, i) => v.getUint32(4 * i, true));
  }

  async f32(): Promise<number> {
    const b = await this.bytes(4);
    return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
  }
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Write the GGUF of an old GGML LLaMA file. The tensors' bytes are copied unchanged, so a
 * 4 GB Q4_0 file needs no more memory than one 16 MiB chunk.
 *
 * Rejects with `ModelLoadError` (`ERR_MODEL_LOAD`) for a file that is not GGML, is already
 * GGUF, is truncated, or has a type its format version cannot hold, and with
 * `InvalidArgumentError` (`ERR_INVALID_ARGUMENT`) for bad options.
 */
export async function convertGgml(options: ConvertGgmlOptions): Promise<ConvertGgmlResult> {
  const o = checkKeys(options, ['input', 'output', 'name', 'description', 'contextLength', 'eps', 'gqa', 'onProgress', 'signal'], 'convertGgml options');
  const input = optString(o, 'input');
  if (!input) throw invalid('a non-empty string', 'input', o.input);
  const output = optString(o, 'output');
  if (!output) throw invalid('a non-empty string', 'output', o.output);
  if (resolve(input) === resolve(output)) throw new InvalidArgumentError(`output ${output} is the input`);
  const contextLength = optInteger(o, 'contextLength', 1, 0xffffffff, 2048);
  const eps = optNumber(o, 'eps', 0, 1, 5e-6);
  const gqa = optInteger(o, 'gqa', 1, 256, 1);
  const onProgress = optFunction<(done: number, total: number) => void>(o, 'onProgress');
  const signal = optSignal(o);
  throwIfAborted(signal);

  let fh: FileHandle;
  try {
    fh = await open(input, 'r');
  } catch (err) {
    throw loadError(input, err);
  }
  try {
    const size = (await fh.stat()).size;
    const r = new Reader(fh, size, input);
    const bad = (why: string): ModelLoadError => new ModelLoadError('ERR_MODEL_LOAD', `${input}: ${why}`);
    const magic = Buffer.from(await r.bytes(4)).toString('latin1');
    let format: 'GGML' | 'GGMF' | 'GGJT';
    let version = 1;
    if (magic === 'GGUF') throw bad('the file is already in GGUF format');
    if (magic === 'lmgg') format = 'GGML';
    else if (magic === 'fmgg' || magic === 'tjgg') {
      version = (await r.u32s(1))[0];
      format = magic === 'fmgg' ? 'GGMF' : 'GGJT';
      if (format === 'GGMF' && version !== 1) throw bad(`cannot handle GGMF version ${version}`);
      if (format === 'GGJT' && (version < 1 || version > 3)) throw bad(`cannot handle GGJT version ${version}`);
    } else {
      throw bad(`unexpected magic ${JSON.stringify(magic)}: not a GGML LLaMA file`);
    }
    const [nVocab, nEmbd, , nHead, nLayer, , ftype] = await r.u32s(7);
    const ftypeName = FTYPES[ftype];
    if (!ftypeName) throw bad(`invalid file type ${ftype}`);
    // validate_conversion: the quantization formats changed in GGJTv2 and v3.
    if ((format !== 'GGJT' || version < 2) && ftype > 1) throw bad(`quantizations changed in GGJTv2: ${format}v${version} files of type ${ftypeName} cannot be converted`);
    if (format === 'GGJT' && version === 2 && [2, 3, 4, 7].includes(ftype)) throw bad(`Q4 and Q8 quantizations changed in GGJTv3: GGJTv2 files of type ${ftypeName} cannot be converted`);
    if (nHead === 0 || nEmbd % nHead !== 0) throw bad(`n_embd ${nEmbd} is not a multiple of n_head ${nHead}`);
    let nKvHead = nHead;
    if (gqa !== 1) {
      const found = Array.from({ length: 255 }, (_, i) => i + 1).filter((x) => nHead / x === gqa).pop();
      if (found === undefined) throw new InvalidArgumentError(`cannot determine the KV heads from gqa ${gqa} and ${nHead} heads`);
      nKvHead = found;
    }

    const tokens: string[] = [];
    const scores: number[] = [];
    const types: number[] = [];
    for (let id = 0; id < nVocab; id++) {
      const len = (await r.u32s(1))[0];
      if (len >= 4096) throw bad(`vocabulary item ${id} is ${len} bytes long`);
      const raw = (await r.bytes(len)).slice();
      const score = format !== 'GGML' ? await r.f32() : 0;
      let text: string;
      let type = 1;
      if (id <= 2) {
        [text, type] = id === 0 ? ['<unk>', 2] : id === 1 ? ['<s>', 3] : ['</s>', 3];
      } else if (raw.length === 0) {
        text = '';
        type = 3;
      } else if (id <= 258 && raw.length === 1) {
        text = `<0x${raw[0].toString(16).toUpperCase().padStart(2, '0')}>`;
        type = 6;
      } else {
        try {
          text = decoder.decode(raw).replaceAll(' ', '\u2581');
        } catch {
          throw bad(`vocabulary item ${id} is not valid UTF-8`);
        }
      }
      tokens.push(text);
      scores.push(score);
      types.push(type);
    }
    if (nVocab < 3) throw bad('the vocabulary has fewer than 3 items');

    const tensors: GgmlTensor[] = [];
    while (r.pos < size) {
      const [nDims, nameLen, dtype] = await r.u32s(3);
      if (nDims > 4) throw bad(`tensor ${tensors.length} has ${nDims} dimensions`);
      if (nameLen >= 4096) throw bad(`tensor ${tensors.length} has a ${nameLen}-byte name`);
      const traits = ggmlTypeTraits(dtype as GgmlType);
      if (!traits) throw bad(`tensor ${tensors.length} has unknown type ${dtype}`);
      const dims = await r.u32s(nDims);
      const name = Buffer.from(await r.bytes(nameLen)).toString('utf8');
      if (format === 'GGJT') r.pos = Math.ceil(r.pos / 32) * 32;
      const bytes = (dims.reduce((a, b) => a * b, 1) * traits.typeSize) / traits.blockSize;
      if (!Number.isInteger(bytes)) throw bad(`tensor ${name}: ${dims.join('x')} is not a whole number of ${traits.name} blocks`);
      if (r.pos + bytes > size) throw bad(`tensor ${name} runs past the end of the file (truncated?)`);
      tensors.push({ name, type: dtype as GgmlType, dims, start: r.pos, bytes });
      r.pos += bytes;
    }
    const ff = tensors.find((t) => t.name === 'layers.0.feed_forward.w1.weight');
    if (!ff || ff.dims.length < 2) throw bad('missing the layer 0 feed-forward tensor (layers.0.feed_forward.w1.weight)');

    const meta = [
      kv.str('general.architecture', 'llama'),
      kv.str('general.name', optString(o, 'name') ?? basename(input)),
      kv.str('general.description', optString(o, 'description') ?? `converted from legacy ${format}v${version} ${ftypeName} format`),
      kv.u32('general.file_type', ftype),
      kv.u32('llama.context_length', contextLength),
      kv.u32('llama.embedding_length', nEmbd),
      kv.u32('llama.block_count', nLayer),
      kv.u32('llama.feed_forward_length', ff.dims[1]),
      kv.u32('llama.rope.dimension_count', Math.floor(nEmbd / nHead)),
      kv.u32('llama.attention.head_count', nHead),
      kv.u32('llama.attention.head_count_kv', nKvHead),
      kv.f32('llama.attention.layer_norm_rms_epsilon', eps),
      kv.str('tokenizer.ggml.model', 'llama'),
      kv.str('tokenizer.ggml.pre', 'default'),
      kv.strArray('tokenizer.ggml.tokens', tokens),
      kv.f32Array('tokenizer.ggml.scores', scores),
      kv.i32Array('tokenizer.ggml.token_type', types),
      kv.u32('tokenizer.ggml.unknown_token_id', 0),
      kv.u32('tokenizer.ggml.bos_token_id', 1),
      kv.u32('tokenizer.ggml.eos_token_id', 2),
    ].filter((e) => e.type !== 8 || e.value !== ''); // add_string skips empty strings
    const layout = tensors.map((t) => {
      const out = ggufName(t.name, nLayer);
      if (!out) throw bad(`tensor ${t.name} is not part of a LLaMA model`);
      return { name: out, type: t.type, shape: [...t.dims] };
    });
    const header = encodeGgufHeader(meta, layout);

    const partial = `${output}.part`;
    const total = tensors.reduce((a, t) => a + t.bytes, 0);
    try {
      const out = await open(partial, 'w');
      try {
        const head = new Uint8Array(header.dataStart);
        head.set(header.bytes);
        await writeAll(out, head, 0);
        const chunk = Buffer.allocUnsafeSlow(Math.min(16 << 20, Math.max(1, ...tensors.map((t) => t.bytes))));
        let done = 0;
        onProgress?.(0, total);
        for (const [i, t] of tensors.entries()) {
          if (signal?.aborted) throw new AbortedError('The conversion was aborted', { cause: signal.reason });
          const at = header.dataStart + header.offsets[i];
          for (let off = 0; off < t.bytes; off += chunk.length) {
            const n = Math.min(chunk.length, t.bytes - off);
            const { bytesRead } = await fh.read(chunk, 0, n, t.start + off);
            if (bytesRead !== n) throw bad('short read');
            await writeAll(out, chunk.subarray(0, n), at + off);
            done += n;
            onProgress?.(done, total);
          }
          const pad = (header.alignment - (t.bytes % header.alignment)) % header.alignment;
          if (pad > 0) await writeAll(out, new Uint8Array(pad), at + t.bytes);
        }
      } finally {
        await out.close();
      }
      await rename(partial, output);
    } catch (err) {
      await rm(partial, { force: true });
      if (err instanceof MinigptError) throw err;
      const e = err as NodeJS.ErrnoException;
      if (e?.syscall) throw new InvalidArgumentError(`cannot write ${output}: ${e.message}`, { cause: err });
      throw err;
    }
    return { format: `${format}v${version}`, fileType: ftypeName, tensors: tensors.length, bytes: (await stat(output)).size };
  } finally {
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}
