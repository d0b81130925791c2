// Seeded mutations of the fuzz corpus. A mutation is a *recipe*: a base file name and a list
// of byte-level operations with every parameter written out, so a crashing input can be kept
// as a few lines of JSON (tools/fuzz/regressions.json) and rebuilt exactly from the corpus,
// which is itself regenerated from seeds at test time; no binary fixture is committed.

import { makeRng } from '../fixtures/prng.js';
import { ggufLayout } from './gguf-layout.js';

/** Applies `recipe.ops` to a copy of `bases[recipe.base]`; `bases` maps names to Buffers. */
export function applyRecipe(recipe, bases) {
  let b = Buffer.from(base(bases, recipe.base));
  for (const op of recipe.ops) {
    switch (op.op) {
      case 'flip':
        if (op.at < b.length) b[op.at] ^= op.mask;
        break;
      case 'set': {
        const bytes = Buffer.from(op.hex, 'hex');
        if (op.at + bytes.length <= b.length) bytes.copy(b, op.at);
        break;
      }
      case 'truncate':
        b = b.subarray(0, op.length);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, op.at), b.subarray(op.at + op.length)]);
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, op.at), Buffer.from(op.hex, 'hex'), b.subarray(op.at)]);
        break;
      case 'replace':
        b = Buffer.concat([b.subarray(0, op.at), Buffer.from(op.hex, 'hex'), b.subarray(op.at + op.length)]);
        break;
      case 'splice':
        b = Buffer.concat([b.subarray(0, op.cut), base(bases, op.other).subarray(op.otherCut)]);
        break;
      case 'string-element':
        b = withStringElement(b, op.key, op.index, Buffer.from(op.hex, 'hex'));
        break;
      default:
        throw new Error(`unknown fuzz op ${op.op}`);
    }
  }
  return b;
}

/**
 * `b` with element `index` of the string array `key` replaced by `text`, the tensor data moved
 * to the next aligned offset so that the file stays well-formed apart from the new string.
 * Returns `b` unchanged when its header no longer parses or has no such element.
 */
export function withStringElement(b, key, index, text) {
  let layout;
  try {
    layout = ggufLayout(b);
  } catch {
    return b;
  }
  const f = layout.fields.filter((g) => g.kind === 'element-length' && g.key === key)[index];
  if (!f) return b;
  const alignment = Number(layout.fields.find((g) => g.kind === 'scalar' && g.key === 'general.alignment')?.value ?? 32n);
  const tensors = layout.fields.some((g) => g.kind === 'tensor-offset');
  const align = (n) => (tensors ? Math.ceil(n / alignment) * alignment : n);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(text.length));
  const header = Buffer.concat([b.subarray(0, f.at), head, text, b.subarray(f.at + 8 + Number(f.value), layout.headerEnd)]);
  const padding = Buffer.alloc(align(header.length) - header.length);
  return Buffer.concat([header, padding, b.subarray(align(layout.headerEnd))]);
}

/** The texts (as Buffers) of the string array `key` in a well-formed GGUF, from its layout. */
export function stringElements(bytes, layout, key) {
  return layout.fields.filter((f) => f.kind === 'element-length' && f.key === key)
    .map((f) => bytes.subarray(f.at + 8, f.at + 8 + Number(f.value)));
}

function base(bases, name) {
  const b = bases[name];
  if (!b) throw new Error(`the fuzz corpus has no base "${name}"`);
  return b;
}

/** A generator of random decisions seeded from (seed, kind, index), independent of other cases. */
export function caseRng(seed, kind, index) {
  let h = 0x811c9dc5;
  for (const c of `${kind}:${index}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193);
  const rng = makeRng((h ^ Math.imul(seed >>> 0, 0x9e3779b9)) >>> 0);
  const int = (n) => Math.floor(rng.uniform() * n);
  return {
    int,
    pick: (list) => list[int(list.length)],
    chance: (p) => rng.uniform() < p,
    /** Mostly small offsets: parsers trust the front of a file most. */
    skewed: (n) => Math.min(n - 1, Math.floor(n * rng.uniform() ** 2)),
  };
}

const ALL_ONES = (size) => (1n << BigInt(size * 8)) - 1n;

/** Values that break parsers: zero, one, sign boundaries, all ones, and near the original. */
function interesting(r, size, value) {
  const max = ALL_ONES(size);
  const half = 1n << BigInt(size * 8 - 1);
  const choices = [0n, 1n, 2n, 3n, 4n, 7n, 8n, 255n, half - 1n, half, max, max - 1n, value + 1n, value - 1n, value * 2n, value / 2n, value * 1000n];
  if (size >= 4) choices.push(0xffffn, 0x10000n, 0x7fffffffn, 0x80000000n, 0xffffffffn);
  if (size === 8) choices.push(1n << 32n, 1n << 40n, 1n << 62n);
  let v = r.chance(0.85) ? r.pick(choices) : BigInt(r.int(2 ** 31)) * BigInt(r.int(2 ** 31) + 1);
  v = ((v % (max + 1n)) + (max + 1n)) % (max + 1n);
  return v;
}

function hexOf(value, size) {
  const b = Buffer.alloc(size);
  if (size === 8) b.writeBigUInt64LE(value);
  else if (size === 4) b.writeUInt32LE(Number(value));
  else if (size === 2) b.writeUInt16LE(Number(value));
  else b[0] = Number(value);
  return b.toString('hex');
}

// Kinds of GGUF header field a field edit aims at, weighted towards those that size things.
const FIELD_WEIGHTS = {
  'version': 1, 'tensor-count': 3, 'kv-count': 3, 'key-length': 3, 'value-type': 4, 'string-length': 4,
  'scalar': 8, 'array-type': 3, 'array-length': 4, 'element': 4, 'element-length': 2, 'tensor-name-length': 2, 'tensor-ndims': 4, 'tensor-dim': 8,
  'tensor-type': 5, 'tensor-offset': 5,
};

function fieldEdit(r, layout) {
  const kinds = Object.keys(FIELD_WEIGHTS).filter((k) => layout.fields.some((f) => f.kind === k));
  const total = kinds.reduce((a, k) => a + FIELD_WEIGHTS[k], 0);
  let x = r.int(total);
  const kind = kinds.find((k) => (x -= FIELD_WEIGHTS[k]) < 0);
  const f = r.pick(layout.fields.filter((g) => g.kind === kind));
  // Float scalars get float edge cases; everything else integer ones.
  if ((f.kind === 'scalar' || f.kind === 'element') && (f.type === 6 || f.type === 12)) {
    const b = Buffer.alloc(f.size);
    const v = r.pick([0, -1, -0, 1e-45, 1e38, Infinity, -Infinity, NaN]);
    if (f.size === 4) b.writeFloatLE(v); else b.writeDoubleLE(v);
    return { op: 'set', at: f.at, hex: b.toString('hex'), field: `${f.kind} ${f.key ?? ''}`.trim() };
  }
  let value = interesting(r, f.size, f.value);
  // Type tags: mostly real ids, so that same-sized swaps (f32 <-> i32) get past the offset checks.
  if (f.kind === 'tensor-type' && r.chance(0.7)) value = BigInt(r.pick(GGML_TYPE_IDS));
  if ((f.kind === 'value-type' || f.kind === 'array-type') && r.chance(0.7)) value = BigInt(r.int(14));
  return { op: 'set', at: f.at, hex: hexOf(value, f.size), field: `${f.kind} ${f.key ?? ''}`.trim() };
}

const GGML_TYPE_IDS = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 23, 24, 25, 26, 27, 28, 30, 34, 35, 39, 40, 41, 42];

// Names the loaders switch on: a file that claims another architecture, tokenizer or projector
// type than its tensors fit runs code paths the well-formed corpus never reaches.
const STRING_VALUES = {
  'general.architecture': ['llama', 'clip', 'blip2', 'gemma3', 'qwen2', 'qwen2vl', 'phi3', 'mamba', 'rwkv6', 'bert', 't5', 'gpt2', 'falcon', 'nonesuch', ''],
  'tokenizer.ggml.model': ['llama', 'gpt2', 'bert', 't5', 'rwkv', 'none', 'no_vocab', 'plamo2', 'gemma4', 'ugm', 'nonesuch', ''],
  'tokenizer.ggml.pre': ['default', 'llama3', 'qwen2', 'gpt-2', 'nonesuch'],
  'clip.projector_type': ['mlp', 'ldp', 'ldpv2', 'resampler', 'adapter', 'qwen2vl_merger', 'qwen2.5vl_merger', 'gemma3', 'idefics3', 'pixtral',
    'internvl', 'llama4', 'lfm2', 'kimivl', 'cogvlm', 'janus_pro', 'glm4v', 'phi4', 'ultravox', 'minicpmv4_6', 'nonesuch', ''],
  'blip2.variant': ['qformer', 'patch_group', 'nonesuch', ''],
  'blip2.prompt_template': ['minigpt4-v0', 'minigpt4-llama2', 'none', 'nonesuch'],
};

/** Replaces a string value (length and bytes) with another name, or junk of the same length. */
function stringEdit(r, layout, bytes) {
  const strings = layout.fields.filter((f) => f.kind === 'string-length' && f.key !== undefined);
  const known = strings.filter((f) => STRING_VALUES[f.key]);
  const f = known.length && r.chance(0.8) ? r.pick(known) : r.pick(strings);
  const oldLength = Number(f.value);
  let text;
  if (STRING_VALUES[f.key] && r.chance(0.9)) text = Buffer.from(r.pick(STRING_VALUES[f.key]));
  else text = Buffer.from(Array.from({ length: oldLength }, () => r.pick([0, 0x80, 0xff, 0x25, 0x7b, r.int(256)])));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(text.length));
  return { op: 'replace', at: f.at, length: 8 + oldLength, hex: Buffer.concat([head, text]).toString('hex'), field: `string ${f.key}` };
}

const TOKENS = 'tokenizer.ggml.tokens';
const SPECIAL_IDS = ['tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.unknown_token_id'];

/**
 * Edits aimed at the vocabulary: llama.cpp reads tokens as C strings (up to a NUL; an empty
 * one becomes "[EMPTY_<id>]") and aborts on two it reads as equal, so rename tokens into
 * twins of others in the ways bytes can hide it, and retype or repoint special tokens.
 * String edits are `string-element` ops (by index, so they survive a re-layout); each records
 * the text it replaced in `was`, so a regression can tell when the corpus changed under it.
 */
function vocabEdits(r, layout, bytes) {
  const tokens = stringElements(bytes, layout, TOKENS);
  const n = tokens.length;
  const ops = [];
  const rename = (index, text) => ops.push({ op: 'string-element', key: TOKENS, index, hex: text.toString('hex'), was: tokens[index].toString('utf8') });
  const nul = (k) => Buffer.alloc(k);
  const junk = (k) => Buffer.from(Array.from({ length: k }, () => r.pick([0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xf0, 0xff, r.int(256)])));
  const a = r.int(n);
  let b = r.int(n);
  if (b === a) b = (a + 1) % n;
  const edit = r.pick(['twin-nul', 'twin-nul', 'twin', 'cut', 'cut', 'empty', 'empty-name', 'invalid', 'types', 'special']);
  switch (edit) {
    case 'twin-nul': {
      // The case: same length, padded with NULs, often a special or byte token.
      const pad = r.chance(0.5) ? Math.max(1, tokens[a].length - tokens[b].length) : 1 + r.int(4);
      rename(r.chance(0.5) ? a : r.int(Math.min(n, 300)), Buffer.concat([tokens[b], nul(pad), r.chance(0.3) ? junk(1 + r.int(3)) : nul(0)]));
      break;
    }
    case 'twin': rename(a, Buffer.from(tokens[b])); break;
    case 'cut': {
      // A NUL inside a token: the vocabulary holds every prefix of its words, so this collides often.
      const t = tokens[a];
      const at = t.length > 1 ? 1 + r.int(t.length - 1) : 0;
      rename(a, r.chance(0.5) ? Buffer.concat([t.subarray(0, at), nul(1), t.subarray(at + 1)]) : Buffer.concat([t.subarray(0, at), nul(1), t.subarray(at)]));
      break;
    }
    case 'empty': rename(a, r.chance(0.5) ? Buffer.alloc(0) : nul(1 + r.int(3))); break;
    case 'empty-name':
      rename(a, Buffer.alloc(0));
      rename(b, Buffer.from(`[EMPTY_${r.chance(0.8) ? a : b}]`));
      break;
    case 'invalid': {
      // Different invalid UTF-8 reads as the same U+FFFD text: only the bytes tell twins apart.
      const x = junk(1 + r.int(3));
      rename(a, x);
      rename(b, r.chance(0.5) ? Buffer.from(x) : Buffer.concat([x, junk(1)]));
      break;
    }
    case 'types': {
      const types = layout.fields.filter((f) => f.kind === 'element' && f.key === 'tokenizer.ggml.token_type');
      for (let i = 0, k = 1 + r.int(4); i < k && types.length; i++) {
        ops.push({ op: 'set', at: r.pick(types).at, hex: hexOf(BigInt(r.pick([0, 1, 2, 3, 4, 5, 6, 7, 0xffffffff])), 4), field: 'element tokenizer.ggml.token_type' });
      }
      break;
    }
    case 'special': {
      const f = r.pick(layout.fields.filter((g) => g.kind === 'scalar' && SPECIAL_IDS.includes(g.key)));
      if (f) ops.push({ op: 'set', at: f.at, hex: hexOf(BigInt(a), f.size), field: `scalar ${f.key}` });
      rename(a, Buffer.concat([tokens[b], nul(1 + r.int(2))]));
      break;
    }
  }
  // Another tokenizer model, NUL-padded in place: llama.cpp reads "bert\0" as "bert".
  const model = layout.fields.find((f) => f.kind === 'string-length' && f.key === 'tokenizer.ggml.model');
  if (model && r.chance(0.25)) {
    const name = Buffer.from(r.pick(['bert', 'gpt2', 't5', 'rwkv', 'none', 'llama']));
    const size = Number(model.value);
    if (name.length <= size) ops.push({ op: 'set', at: model.at + 8, hex: Buffer.concat([name, nul(size - name.length)]).toString('hex'), field: 'value tokenizer.ggml.model' });
  }
  // Sets carry offsets into the base: they go first, before any string changes the layout.
  return ops.sort((x, y) => (x.op === 'set' ? 0 : 1) - (y.op === 'set' ? 0 : 1));
}

function flips(r, length, headerEnd) {
  const ops = [];
  const n = 1 + r.int(8);
  for (let i = 0; i < n; i++) {
    const at = r.chance(0.8) ? (r.chance(0.5) ? r.int(headerEnd) : r.skewed(headerEnd)) : r.int(length);
    ops.push({ op: 'flip', at, mask: 1 << r.int(8) });
  }
  return ops;
}

/**
 * One mutation recipe for case `index` of `kind`. `corpus.kinds[kind]` lists the bases the
 * kind mutates; `corpus.bases` holds their bytes (and those of every other base, for splices).
 * `only` names the one strategy to use (e.g. 'vocab'), else each case picks one.
 */
export function makeRecipe(corpus, kind, seed, index, only) {
  const r = caseRng(seed, kind, index);
  const { bases, gguf } = corpus.kinds[kind];
  const name = r.pick(bases);
  const bytes = corpus.bases[name];
  const layout = gguf ? ggufLayout(bytes) : { fields: [], headerEnd: Math.min(bytes.length, 512) };
  const ops = [];
  const hasVocab = layout.fields.some((f) => f.kind === 'element-length' && f.key === TOKENS);
  const strategies = gguf
    ? ['field', 'field', 'field', 'fields', 'string', 'string', 'flip', 'flip', 'truncate', 'splice', 'shift', 'mixed', ...(hasVocab ? ['vocab', 'vocab'] : [])]
    : ['flip', 'flip', 'flip', 'set', 'truncate', 'truncate', 'splice', 'shift', 'mixed'];
  const strategy = only ?? r.pick(strategies);
  const truncate = () => ({ op: 'truncate', length: r.chance(0.6) ? r.skewed(layout.headerEnd + 64) : r.int(bytes.length) });
  const splice = () => {
    const sameKind = r.chance(0.6);
    const other = sameKind ? r.pick(bases) : r.pick(Object.keys(corpus.bases));
    const otherLength = corpus.bases[other].length;
    return { op: 'splice', cut: r.int(bytes.length), other, otherCut: r.int(otherLength) };
  };
  const shift = () => {
    const at = r.skewed(layout.headerEnd);
    return r.chance(0.5)
      ? { op: 'delete', at, length: 1 + r.int(16) }
      : { op: 'insert', at, hex: Buffer.from(Array.from({ length: 1 + r.int(16) }, () => r.pick([0, 0xff, r.int(256)]))).toString('hex') };
  };
  const set = () => {
    const size = r.pick([1, 2, 4]);
    const at = r.skewed(Math.max(1, layout.headerEnd - size));
    return { op: 'set', at, hex: hexOf(interesting(r, size, 0n), size) };
  };
  switch (strategy) {
    case 'field': ops.push(fieldEdit(r, layout)); break;
    case 'fields': for (let i = 0, n = 2 + r.int(3); i < n; i++) ops.push(fieldEdit(r, layout)); break;
    case 'flip': ops.push(...flips(r, bytes.length, layout.headerEnd)); break;
    case 'set': ops.push(set()); break;
    case 'string': ops.push(stringEdit(r, layout, bytes), ...(r.chance(0.3) ? [fieldEdit(r, layout)] : [])); break;
    case 'vocab': ops.push(...vocabEdits(r, layout, bytes)); break;
    case 'truncate': ops.push(truncate()); break;
    case 'splice': ops.push(splice()); break;
    case 'shift': ops.push(shift()); break;
    case 'mixed':
      ops.push(gguf ? fieldEdit(r, layout) : set(), ...flips(r, bytes.length, layout.headerEnd));
      if (r.chance(0.3)) ops.push(truncate());
      break;
  }
  return { kind, base: name, strategy, ops };
}
