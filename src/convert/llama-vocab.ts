/**
 * @internal
 * The tokenizer keys of a LLaMA GGUF from a Hugging Face folder, ported from llama.cpp's
 * converter: `_create_vocab_sentencepiece` (conversion/base.py) for the token list, scores
 * and types from `tokenizer.model`, `added_tokens.json` and `tokenizer_config.json`'s
 * `added_tokens_decoder`; gguf-py's `SpecialVocab` (vocab.py) for the special token ids,
 * the add-BOS/EOS/SEP flags and the chat template from tokenizer.json,
 * tokenizer_config.json, chat_template.jinja/.json and config.json. The script does not
 * read special_tokens_map.json, so neither do we.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { kv } from '../gguf/write.js';
import type { GgufMetadataEntry } from '../gguf/types.js';
import { parseSentencePiece, PieceType } from './sentencepiece.js';
import { loadError } from './file-range.js';

type Json = Record<string, unknown>;

/** Key-value entries in insertion order; setting a key again keeps its place (a Python dict). */
export class OrderedKv {
  private readonly map = new Map<string, GgufMetadataEntry>();
  set(e: GgufMetadataEntry): void { this.map.set(e.key, e); }
  delete(key: string): void { this.map.delete(key); }
  has(key: string): boolean { return this.map.has(key); }
  entries(): GgufMetadataEntry[] { return [...this.map.values()]; }
}

/** Reads a JSON file of the folder; undefined when absent. */
export async function readJsonIn(folder: string, name: string): Promise<unknown> {
  const path = join(folder, name);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw loadError(path, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${path} is not valid JSON: ${(err as Error).message}`);
  }
}

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);
const pyInt = (v: unknown): number | undefined =>
  typeof v === 'boolean' ? Number(v) : typeof v === 'number' && Number.isInteger(v) ? v : undefined;

// TextModel.does_token_look_special.
function looksSpecial(t: string): boolean {
  return ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
    (t.startsWith('<|') && t.endsWith('|>')) || (t.startsWith('<｜') && t.endsWith('｜>')) ||
    (t.startsWith('<unused') && t.endsWith('>'));
}

/** What {@link vocabMetadata} found, besides the entries it added. */
export interface VocabInfo {
  tokens: number;
  warnings: string[];
}

/**
 * Add the tokenizer entries for `folder` to `out`, in the order llama.cpp's converter writes
 * them. `vocabSize` is config.json's vocab_size (the token list is padded or cut to it).
 */
export async function vocabMetadata(folder: string, vocabSize: number | undefined, out: OrderedKv): Promise<VocabInfo> {
  const warnings: string[] = [];
  const tokenizerConfig = await readJsonIn(folder, 'tokenizer_config.json');
  if (isObject(tokenizerConfig) && tokenizerConfig.add_prefix_space !== undefined && tokenizerConfig.add_prefix_space !== null) {
    out.set(kv.bool('tokenizer.ggml.add_space_prefix', Boolean(tokenizerConfig.add_prefix_space)));
  }

  const spmPath = join(folder, 'tokenizer.model');
  let spmBytes: Uint8Array;
  try {
    spmBytes = await readFile(spmPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ModelLoadError('ERR_MODEL_LOAD', `${folder} has no tokenizer.model: only SentencePiece (LLaMA 1/2, Vicuna) vocabularies can be converted; tokenizer.json-only (Llama 3 BPE) models are not supported`);
    }
    throw loadError(spmPath, err);
  }
  const pieces = parseSentencePiece(spmBytes, spmPath);
  const n = vocabSize ?? pieces.length;
  const tokens: string[] = Array.from({ length: n }, (_, i) => `[PAD${i}]`);
  const scores: number[] = new Array(n).fill(-10000.0);
  const types: number[] = new Array(n).fill(PieceType.UNUSED);
  for (let id = 0; id < pieces.length; id++) {
    if (id >= n) {
      warnings.push(`tokenizer.model has ${pieces.length} pieces but vocab_size is ${n}: pieces from id ${id} are left out`);
      break;
    }
    const p = pieces[id];
    tokens[id] = p.piece;
    scores[id] = p.score;
    // sentencepiece's IsUnknown/IsControl/IsUnused/IsByte; USER_DEFINED pieces count as NORMAL.
    types[id] = [PieceType.UNKNOWN, PieceType.CONTROL, PieceType.UNUSED, PieceType.BYTE].includes(p.type) ? p.type : PieceType.NORMAL;
  }
  const addedTokens = await readJsonIn(folder, 'added_tokens.json');
  if (isObject(addedTokens)) {
    for (const [text, idValue] of Object.entries(addedTokens)) {
      const id = Number(idValue);
      if (!(id < n)) { warnings.push(`added_tokens.json: token ${id} is out of range, max=${n - 1}`); continue; }
      tokens[id] = text;
      scores[id] = -1000.0;
      types[id] = PieceType.USER_DEFINED;
    }
  }
  if (isObject(tokenizerConfig) && isObject(tokenizerConfig.added_tokens_decoder)) {
    for (const [key, data] of Object.entries(tokenizerConfig.added_tokens_decoder)) {
      const id = Number.parseInt(key, 10);
      if (!isObject(data) || typeof data.content !== 'string') continue;
      let token = data.content;
      if (!(id < n)) { warnings.push(`tokenizer_config.json: token ${id} is out of range, max=${n - 1}`); continue; }
      if (types[id] !== PieceType.UNUSED && tokens[id] !== token) warnings.push(`replacing token ${id}: ${JSON.stringify(tokens[id])} -> ${JSON.stringify(token)}`);
      if (data.special || looksSpecial(token)) {
        types[id] = PieceType.CONTROL;
      } else {
        token = token.replaceAll('\u2581', ' ');
        types[id] = PieceType.USER_DEFINED;
      }
      scores[id] = -1000.0;
      tokens[id] = token;
    }
  }

  out.set(kv.str('tokenizer.ggml.model', 'llama'));
  out.set(kv.str('tokenizer.ggml.pre', 'default'));
  out.set(kv.strArray('tokenizer.ggml.tokens', tokens));
  out.set(kv.f32Array('tokenizer.ggml.scores', scores));
  out.set(kv.i32Array('tokenizer.ggml.token_type', types));
  await specialVocab(folder, n, tokenizerConfig, out, warnings);

  // LlamaModel.set_vocab's fixed-up vocabularies.
  if (vocabSize === 32016) {
    // CodeLlama's infill tokens (the script also re-reads the folder for prefix/suffix/middle/eot
    // tokens named in tokenizer_config.json; CodeLlama's own files name none).
    out.set(kv.u32('tokenizer.ggml.prefix_token_id', 32007));
    out.set(kv.u32('tokenizer.ggml.suffix_token_id', 32008));
    out.set(kv.u32('tokenizer.ggml.middle_token_id', 32009));
    out.set(kv.u32('tokenizer.ggml.eot_token_id', 32010));
  }
  if (vocabSize === 49152) out.set(kv.bool('tokenizer.ggml.add_bos_token', false));
  return { tokens: n, warnings };
}

const ID_KEYS: Record<string, string> = {
  bos: 'tokenizer.ggml.bos_token_id', eos: 'tokenizer.ggml.eos_token_id', unk: 'tokenizer.ggml.unknown_token_id',
  sep: 'tokenizer.ggml.seperator_token_id', pad: 'tokenizer.ggml.padding_token_id', mask: 'tokenizer.ggml.mask_token_id',
  eot: 'tokenizer.ggml.eot_token_id', eom: 'tokenizer.ggml.eom_token_id',
};
const ADD_KEYS: Record<string, string> = {
  bos: 'tokenizer.ggml.add_bos_token', eos: 'tokenizer.ggml.add_eos_token', sep: 'tokenizer.ggml.add_sep_token',
};

// gguf-py SpecialVocab(path, n_vocab) + add_to_gguf, for load_merges=False.
async function specialVocab(folder: string, nVocab: number, tokenizerConfigRaw: unknown, out: OrderedKv, warnings: string[]): Promise<void> {
  const ids = new Map<string, number>();
  const add = new Map<string, boolean>();
  let chatTemplate: unknown;
  let lowercase: boolean | undefined;
  let stripAccents: boolean | undefined;
  let types = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'];

  const setSpecial = (typ: string, tid: unknown): void => {
    const id = pyInt(tid);
    if (id === undefined) return;
    if (id < 0) throw new ModelLoadError('ERR_MODEL_LOAD', `invalid value for special token type ${typ}: ${id}`);
    if (id < nVocab) {
      if (!ids.has(typ)) ids.set(typ, id);
      return;
    }
    warnings.push(`special token type ${typ}, id ${id} out of range, must be under ${nVocab} - skipping`);
  };
  const parseNormalizer = (norm: Json): void => {
    if (norm.type === 'Lowercase') lowercase = true;
    else if (norm.type === 'StripAccents') stripAccents = true;
    else if (norm.type === 'BertNormalizer') {
      if ('lowercase' in norm) lowercase = Boolean(norm.lowercase);
      if ('strip_accents' in norm) stripAccents = Boolean(norm.strip_accents);
    } else if (norm.type === 'Sequence' && Array.isArray(norm.normalizers)) {
      for (const n of norm.normalizers) if (isObject(n)) parseNormalizer(n);
    }
  };

  // _try_load_from_tokenizer_json
  const tokenizer = await readJsonIn(folder, 'tokenizer.json');
  const tc: Json | undefined = isObject(tokenizerConfigRaw) ? { ...tokenizerConfigRaw } : undefined;
  let addedTokens: Json[] = [];
  if (isObject(tokenizer)) {
    if (isObject(tokenizer.normalizer)) parseNormalizer(tokenizer.normalizer);
    if (Array.isArray(tokenizer.added_tokens)) addedTokens = tokenizer.added_tokens.filter(isObject);
    let bos = tc?.bos_token;
    let cls = tc?.cls_token;
    let eos = tc?.eos_token;
    let sep = tc?.sep_token;
    if (!truthy(bos) && truthy(cls) && tc) tc.bos_token = bos = cls;
    if (!truthy(eos) && truthy(sep) && tc) tc.eos_token = eos = sep;
    const post = tokenizer.post_processor;
    if (isObject(post)) {
      const processors = Array.isArray(post.processors) ? post.processors : [post];
      for (const proc of processors) {
        if (!isObject(proc)) continue;
        if (proc.type === 'RobertaProcessing') {
          add.set('bos', true); add.set('eos', true); add.set('sep', true);
          if (!truthy(cls) && tc) tc.cls_token = cls = (Array.isArray(proc.cls) ? proc.cls : [bos])[0];
          if (!truthy(sep) && tc) tc.sep_token = sep = (Array.isArray(proc.sep) ? proc.sep : [eos])[0];
          continue;
        }
        if (proc.type !== 'TemplateProcessing') continue;
        const single = Array.isArray(proc.single) ? proc.single : [];
        let pair = Array.isArray(proc.pair) ? proc.pair : [];
        const specialId = (e: unknown): unknown => (isObject(e) && isObject(e.SpecialToken) ? e.SpecialToken.id : undefined);
        const seqId = (e: unknown): unknown => (isObject(e) && isObject(e.Sequence) ? e.Sequence.id : undefined);
        let first: unknown;
        let last: unknown;
        if (single.length > 1) {
          first = specialId(single[0]);
          if (truthy(first)) {
            if (!truthy(tc)) bos = first;
            else if (first !== bos && first !== cls) {
              if (!truthy(bos)) tc!.bos_token = bos = first;
              if (!truthy(cls)) tc!.cls_token = cls = first;
            }
            add.set('bos', first === bos || first === cls);
            if (first !== bos && first !== cls) warnings.push(`unknown leading special token ${JSON.stringify(first)} in TemplateProcessing<single>`);
          }
          last = specialId(single[single.length - 1]);
          if (truthy(last)) {
            if (!truthy(tc)) eos = last;
            else if (last !== eos) {
              if (!types.includes('eot')) { types = [...types, 'eot']; tc!.eot_token = eos; }
              else if (!types.includes('eom')) { types = [...types, 'eom']; tc!.eom_token = eos; }
              else warnings.push(`overriding EOS token ${JSON.stringify(eos)} with ${JSON.stringify(last)} without EOT/EOM fallback`);
              tc!.eos_token = eos = last;
            }
            add.set('eos', last === eos);
          }
        }
        if (pair.length > 0) {
          const start = truthy(first) && specialId(pair[0]) === first ? 1 : 0;
          const stop = truthy(last) && specialId(pair[pair.length - 1]) === last ? pair.length - 1 : pair.length;
          pair = pair.slice(start, stop);
          if (pair.length > 0) {
            const a = seqId(pair[0]);
            const b = seqId(pair[pair.length - 1]);
            if (a === 'A' && b === 'B' && (pair = pair.slice(1, -1)).length > 0) {
              let addSep = false;
              const entry = specialId(pair[0]);
              if (truthy(entry)) {
                if ((entry === sep || entry === eos) && !truthy(last)) addSep = true;
              }
              if (pair.length === 2) {
                const second = specialId(pair[1]);
                if (truthy(second) && (second === sep || second === eos)) addSep = true;
              }
              add.set('sep', addSep);
              if (addSep && !truthy(sep) && tc) tc.sep_token = eos;
            }
          }
        }
      }
    }
  }
  if (truthy(tc) && tc) {
    let alt: unknown;
    const jinja = join(folder, 'chat_template.jinja');
    const jinjaText = await readFile(jinja, 'utf8').catch(() => undefined);
    if (jinjaText !== undefined) {
      alt = jinjaText;
      const extraDir = join(folder, 'additional_chat_templates');
      const extra = (await readdir(extraDir).catch(() => [] as string[])).filter((f) => f.endsWith('.jinja')).sort();
      if (extra.length > 0) {
        const list: Json[] = [{ name: 'default', template: jinjaText }];
        for (const f of extra) list.push({ name: f.slice(0, -'.jinja'.length), template: await readFile(join(extraDir, f), 'utf8') });
        alt = list;
      }
    } else {
      const json = await readJsonIn(folder, 'chat_template.json');
      if (isObject(json)) alt = json.chat_template;
    }
    const template = 'chat_template' in tc ? tc.chat_template : alt;
    if (template === undefined || template === null || typeof template === 'string' || Array.isArray(template)) chatTemplate = template ?? undefined;
    else warnings.push('tokenizer_config.json: chat_template has a bad type - ignored');
    for (const typ of types) {
      const addEntry = tc[`add_${typ}_token`];
      if (typeof addEntry === 'boolean') add.set(typ, addEntry);
      const entry = tc[`${typ}_token`];
      const content = typeof entry === 'string' ? entry : isObject(entry) && typeof entry.content === 'string' ? entry.content : undefined;
      if (content === undefined) continue;
      setSpecial(typ, addedTokens.find((t) => t.content === content)?.id);
    }
  }
  // _try_load_from_config_json
  const config = await readJsonIn(folder, 'config.json');
  if (isObject(config)) {
    for (const typ of types) {
      let tid = config[`${typ}_token_id`];
      if ((tid === undefined || tid === null) && isObject(config.text_config)) tid = config.text_config[`${typ}_token_id`];
      setSpecial(typ, tid);
    }
  }

  for (const [typ, id] of ids) {
    if (ID_KEYS[typ]) out.set(kv.u32(ID_KEYS[typ], id));
  }
  for (const [typ, value] of add) {
    if (ADD_KEYS[typ]) out.set(kv.bool(ADD_KEYS[typ], value));
  }
  if (typeof chatTemplate === 'string') {
    if (chatTemplate) out.set(kv.str('tokenizer.chat_template', chatTemplate));
  } else if (Array.isArray(chatTemplate)) {
    let fallback: string | undefined;
    const names: string[] = [];
    for (const choice of chatTemplate) {
      if (!isObject(choice)) continue;
      const name = String(choice.name ?? '').replace(/[^A-Za-z0-9]/g, '_');
      const template = choice.template;
      if (!name || template === undefined || template === null) continue;
      if (name === 'default') fallback = String(template);
      else {
        if (!names.includes(name)) names.push(name);
        if (template) out.set(kv.str(`tokenizer.chat_template.${name}`, String(template)));
      }
    }
    // The script lists the names from a Python set (no fixed order); we keep file order.
    if (names.length > 0) out.set(kv.strArray('tokenizer.chat_templates', names));
    if (fallback) out.set(kv.str('tokenizer.chat_template', fallback));
  }
  if (lowercase !== undefined) out.set(kv.bool('tokenizer.ggml.normalizer.lowercase', lowercase));
  if (stripAccents !== undefined) out.set(kv.bool('tokenizer.ggml.normalizer.strip_accents', stripAccents));
}

// Python truthiness for the JSON values the script tests with `if x` / `not x`.
function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isObject(v)) return Object.keys(v).length > 0;
  return true;
}
