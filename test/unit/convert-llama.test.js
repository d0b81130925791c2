// The LLaMA/Vicuna converter against llama.cpp's own convert_hf_to_gguf.py (same llama.cpp
// tree, run through the shims in tools/fixtures/llama-convert-shim): for tiny random HF
// folders (safetensors and torch .bin, single and sharded, GQA and not, f16/bf16/f32
// weights, with and without the tokenizer JSON files) our GGUF must equal the script's byte
// for byte, which covers every key-value pair (names, types, values, order), every tensor
// info (name, shape, type, offset) and every tensor's data. On a mismatch the test names
// the first differing key or tensor. Plus the typed refusals.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { convertLlama } from '../../dist/convert/llama.js';
import { parseSentencePiece } from '../../dist/convert/sentencepiece.js';
import { modelIdComponents, sizeLabel } from '../../dist/convert/llama-metadata.js';
import { f32ToF16Numpy, f32ToBf16, permuteRows } from '../../dist/convert/llama-tensors.js';
import { readGgufHeader } from '../../dist/gguf/read.js';
import { hasTorch, oracleConvert, oracleMissing, sentencePieceMissing, trainTokenizer, writeLlamaHf } from '../../tools/fixtures/llama-hf.js';

const NO_SPM = sentencePieceMissing();
const NO_ORACLE = oracleMissing();
const NO_TORCH = hasTorch() ? undefined : '/usr/bin/python3 cannot import torch (apt-get install python3-torch)';

let dir;
let spm;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-convert-llama-'));
  if (!NO_SPM) spm = await trainTokenizer(join(dir, 'spm'));
});
after(async () => { await rm(dir, { recursive: true, force: true }); });
let counter = 0;
const tmp = (name) => join(dir, `${counter++}-${name}`);

async function rejectsWith(promise, code, re) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (re) assert.match(err.message, re);
    return true;
  });
}

// A readable account of the first difference, for when the bytes differ.
async function firstDifference(ours, theirs) {
  const a = await readGgufHeader(ours);
  const b = await readGgufHeader(theirs);
  const ma = [...a.metadata.values()];
  const mb = [...b.metadata.values()];
  const ka = ma.map((e) => e.key);
  const kb = mb.map((e) => e.key);
  if (ka.join('\n') !== kb.join('\n')) return `keys differ:\n ours   ${ka.join(', ')}\n theirs ${kb.join(', ')}`;
  for (let i = 0; i < ma.length; i++) {
    const x = ma[i];
    const y = mb[i];
    const show = (e) => JSON.stringify({ type: e.type, arrayType: e.arrayType, value: e.value }, (_, v) => (typeof v === 'bigint' ? String(v) : v)).slice(0, 300);
    if (show(x) !== show(y)) return `key ${x.key}: ours ${show(x)}, theirs ${show(y)}`;
  }
  for (let i = 0; i < Math.max(a.tensors.length, b.tensors.length); i++) {
    const x = a.tensors[i];
    const y = b.tensors[i];
    if (JSON.stringify(x, (_, v) => (typeof v === 'bigint' ? String(v) : v)) !== JSON.stringify(y, (_, v) => (typeof v === 'bigint' ? String(v) : v))) {
      return `tensor ${i}: ours ${JSON.stringify(x, (_, v) => (typeof v === 'bigint' ? String(v) : v))}, theirs ${JSON.stringify(y, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`;
    }
  }
  const [da, db] = [await readFile(ours), await readFile(theirs)];
  const at = da.findIndex((v, i) => v !== db[i]);
  const t = a.tensors.findLast((x) => a.dataOffset + Number(x.offset) <= at);
  return `tensor data differs at byte ${at}${t ? ` (in or after ${t.name})` : ''}; sizes ${da.length} vs ${db.length}`;
}

async function assertSameAsOracle(folder, type) {
  const ours = `${folder}-ours-${type}.gguf`;
  const theirs = `${folder}-theirs-${type}.gguf`;
  const r = oracleConvert(folder, theirs, type);
  assert.ok(r.ok, `convert_hf_to_gguf.py failed:\n${r.log.slice(-3000)}`);
  const res = await convertLlama({ input: folder, output: ours, type });
  const [a, b] = [await readFile(ours), await readFile(theirs)];
  if (!a.equals(b)) assert.fail(await firstDifference(ours, theirs));
  assert.equal(res.bytes, b.length);
  return { ours, theirs, result: res };
}

const VICUNA_TOKENIZER_CONFIG = {
  add_bos_token: true, add_eos_token: false, clean_up_tokenization_spaces: false, model_max_length: 2048,
  bos_token: { __type: 'AddedToken', content: '<s>', lstrip: false, normalized: true, rstrip: false, single_word: false },
  eos_token: { __type: 'AddedToken', content: '</s>', lstrip: false, normalized: true, rstrip: false, single_word: false },
  unk_token: { __type: 'AddedToken', content: '<unk>', lstrip: false, normalized: true, rstrip: false, single_word: false },
  pad_token: null, tokenizer_class: 'LlamaTokenizer', legacy: false,
  chat_template: "{% for m in messages %}{{ '###' + m['role'] + ': ' + m['content'] }}{% endfor %}",
};
const LLAMA_TOKENIZER_JSON = {
  version: '1.0',
  added_tokens: [
    { id: 0, content: '<unk>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: 1, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: 2, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
  ],
  normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
  },
  model: { type: 'BPE', vocab: {}, merges: [] },
};

describe('equals convert_hf_to_gguf.py', { skip: NO_SPM ?? NO_ORACLE }, () => {
  test('safetensors, one file, f16 weights, GQA, no tokenizer JSON files: f16, f32 and bf16 outputs', async () => {
    const folder = tmp('tiny-llama');
    await writeLlamaHf(folder, { tokenizer: spm, heads: 4, kvHeads: 2 });
    for (const type of ['f16', 'f32', 'bf16']) await assertSameAsOracle(folder, type);
  });

  test('safetensors in 3 shards with an index, bf16 weights, tokenizer.json + tokenizer_config.json + generation_config.json', async () => {
    const folder = tmp('lmsys-vicuna-7b-v1.5');
    await writeLlamaHf(folder, {
      tokenizer: spm, format: 'safetensors', shards: 3, dtype: 'BF16', heads: 8, kvHeads: 8, embd: 64, ff: 80, seed: 2,
      config: { _name_or_path: 'lmsys/vicuna-7b-v1.5', pad_token_id: 0, rope_scaling: null },
      files: {
        'tokenizer_config.json': VICUNA_TOKENIZER_CONFIG,
        'tokenizer.json': LLAMA_TOKENIZER_JSON,
        'generation_config.json': { bos_token_id: 1, eos_token_id: 2, pad_token_id: 0, temperature: 0.9, top_p: 0.6, max_length: 4096 },
      },
    });
    await assertSameAsOracle(folder, 'f16');
    await assertSameAsOracle(folder, 'bf16');
  });

  test('torch .bin (torch.save), kv heads = heads, f32 weights, rotary inv_freq buffers, vocab padded past the tokenizer, added tokens', { skip: NO_TORCH }, async () => {
    const folder = tmp('vicuna-13b-delta-v0');
    await writeLlamaHf(folder, {
      tokenizer: spm, format: 'bin', dtype: 'F32', vocab: 404, invFreq: true, seed: 3, kvHeads: 4,
      config: { architectures: ['LLaMAForCausalLM'] },
      files: {
        'added_tokens.json': { '<pad>': 401 },
        'tokenizer_config.json': {
          ...VICUNA_TOKENIZER_CONFIG, chat_template: undefined, add_prefix_space: true,
          added_tokens_decoder: { 402: { content: '<img>', special: false }, 403: { content: '<|im_end|>', special: false } },
        },
        'special_tokens_map.json': { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' },
      },
    });
    await assertSameAsOracle(folder, 'f16');
  });

  test('torch .bin in 2 shards with an index, f16 weights, GQA, tied embeddings', { skip: NO_TORCH }, async () => {
    const folder = tmp('llama-2-chat');
    await writeLlamaHf(folder, { tokenizer: spm, format: 'bin', shards: 2, heads: 4, kvHeads: 1, tied: true, seed: 4 });
    await assertSameAsOracle(folder, 'f16');
  });
});

describe('configs the script cannot read without transformers', { skip: NO_SPM }, () => {
  // Vicuna v0's config.json predates num_key_value_heads: transformers fills in the default
  // (= heads), the script without it stops with a KeyError. We use the default and, as the
  // script does with config.json as it is, write no head_count_kv key.
  test('no num_key_value_heads: same tensors as with it, and no head_count_kv key', async () => {
    const a = tmp('v0-config');
    const b = tmp('v0-config-kv');
    await writeLlamaHf(a, { tokenizer: spm, heads: 4, seed: 7 });
    await writeLlamaHf(b, { tokenizer: spm, heads: 4, kvHeads: 4, seed: 7, config: { rope_theta: undefined } });
    await convertLlama({ input: a, output: `${a}.gguf` });
    await convertLlama({ input: b, output: `${b}.gguf` });
    const [ha, hb] = [await readGgufHeader(`${a}.gguf`), await readGgufHeader(`${b}.gguf`)];
    assert.equal(ha.metadata.has('llama.attention.head_count_kv'), false);
    assert.equal(hb.metadata.get('llama.attention.head_count_kv').value, 4);
    const [da, db] = [await readFile(`${a}.gguf`), await readFile(`${b}.gguf`)];
    assert.ok(da.subarray(ha.dataOffset).equals(db.subarray(hb.dataOffset)), 'tensor data differs');
  });
});

describe('refusals', { skip: NO_SPM }, () => {
  test('an unknown architecture, named', async () => {
    const folder = tmp('gpt2');
    await writeLlamaHf(folder, { tokenizer: spm, config: { architectures: ['GPT2LMHeadModel'] } });
    await rejectsWith(convertLlama({ input: folder, output: tmp('x.gguf') }), 'ERR_MODEL_LOAD', /GPT2LMHeadModel is not supported/);
  });

  test('a missing tensor, named, and no output left behind', async () => {
    const folder = tmp('missing');
    await writeLlamaHf(folder, { tokenizer: spm, edit: [(t) => { delete t['model.layers.1.mlp.up_proj.weight']; }] });
    const out = tmp('missing.gguf');
    await rejectsWith(convertLlama({ input: folder, output: out }), 'ERR_MODEL_LOAD', /blk\.1\.ffn_up\.weight.*model\.layers\.1\.mlp\.up_proj\.weight/);
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith(out.split('/').pop())), []);
  });

  test('a wrong shape, named with both shapes', async () => {
    const folder = tmp('shape');
    await writeLlamaHf(folder, { tokenizer: spm, config: { intermediate_size: 100 } });
    await rejectsWith(convertLlama({ input: folder, output: tmp('x.gguf') }), 'ERR_MODEL_LOAD', /mlp\.\w+_proj\.weight" has shape \[(96, 64|64, 96)\], but config\.json implies \[(100, 64|64, 100)\]/);
  });

  test('an unknown tensor, named', async () => {
    const folder = tmp('extra');
    await writeLlamaHf(folder, { tokenizer: spm, edit: [(t) => { t['model.layers.0.mlp.extra.weight'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) }; }] });
    await rejectsWith(convertLlama({ input: folder, output: tmp('x.gguf') }), 'ERR_MODEL_LOAD', /model\.layers\.0\.mlp\.extra\.weight/);
  });

  test('no tokenizer.model, an index naming a missing shard, bad options', async () => {
    const folder = tmp('notok');
    await writeLlamaHf(folder, {});
    await rejectsWith(convertLlama({ input: folder, output: tmp('x.gguf') }), 'ERR_MODEL_LOAD', /no tokenizer\.model/);
    const sharded = tmp('shards');
    await writeLlamaHf(sharded, { tokenizer: spm, shards: 2 });
    await rm(join(sharded, 'model-00002-of-00002.safetensors'));
    await rejectsWith(convertLlama({ input: sharded, output: tmp('x.gguf') }), 'ERR_MODEL_LOAD', /model-00002-of-00002\.safetensors/);
    await rejectsWith(convertLlama({ input: folder, output: tmp('x.gguf'), type: 'q4_0' }), 'ERR_INVALID_ARGUMENT', /'f32', 'f16', 'bf16'/);
    await rejectsWith(convertLlama({ input: folder, output: tmp('x.gguf'), typo: 1 }), 'ERR_INVALID_ARGUMENT', /typo/);
    await rejectsWith(convertLlama({ input: join(folder, 'config.json'), output: tmp('x.gguf') }), 'ERR_INVALID_ARGUMENT', /not a folder/);
  });

  test('an aborted signal stops it and removes the partial file', async () => {
    const folder = tmp('abort');
    await writeLlamaHf(folder, { tokenizer: spm });
    const out = tmp('abort.gguf');
    const ac = new AbortController();
    let calls = 0;
    await rejectsWith(convertLlama({ input: folder, output: out, signal: ac.signal, onProgress: () => { if (++calls === 3) ac.abort(); } }), 'ERR_ABORTED');
    await assert.rejects(stat(`${out}.part`));
    await assert.rejects(stat(out));
  });
});

describe('pieces', () => {
  test('tokenizer.model parses to the pieces, scores and types SentencePiece reports', { skip: NO_SPM }, async () => {
    const pieces = parseSentencePiece(await readFile(spm), spm);
    const script = 'import json, sys, sentencepiece as spm\nsp = spm.SentencePieceProcessor(model_file=sys.argv[1])\n' +
      'print(json.dumps([[sp.id_to_piece(i), sp.get_score(i), 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i) else 1] for i in range(sp.get_piece_size())]))';
    const r = spawnSync('/usr/bin/python3', ['-c', script, spm], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(pieces.map((p) => [p.piece, p.score, p.type]), JSON.parse(r.stdout));
    assert.deepEqual(pieces.slice(0, 4).map((p) => [p.piece, p.type]), [['<unk>', 2], ['<s>', 3], ['</s>', 3], ['<0x00>', 6]]);
    assert.throws(() => parseSentencePiece(new Uint8Array([0x0a, 0x05, 0x0a]), 'bad.model'), (e) => e.code === 'ERR_MODEL_LOAD' && /bad\.model/.test(e.message));
  });

  test('name heuristics as gguf-py (Metadata.get_model_id_components, size_label)', () => {
    assert.deepEqual(modelIdComponents('lmsys/vicuna-7b-v1.5', 6.7e9), { name: 'vicuna-7b-v1.5', organization: 'lmsys', basename: 'vicuna', finetune: undefined, version: 'v1.5', sizeLabel: '7B' });
    assert.deepEqual(modelIdComponents('Llama-2-7b-chat-hf', 1e5), { name: 'Llama-2-7b-chat-hf', organization: undefined, basename: 'Llama-2', finetune: '7b-chat-hf', version: undefined, sizeLabel: undefined });
    assert.equal(sizeLabel(112960), '113K');
    assert.equal(sizeLabel(6738415616), '6.7B');
    assert.equal(sizeLabel(13015864320), '13B');
  });

  test('numpy f16 and ggml bf16 rounding, rotary row permutation', () => {
    const f = new Float32Array([1, 65504, 65520, 1e-8, 5.960464477539063e-8, 2.980232238769531e-8, -0.1, Infinity, 1.0009765625 + 2 ** -11]);
    const h = new Uint16Array(f.length);
    f32ToF16Numpy(new Uint32Array(f.buffer), h);
    assert.deepEqual(Array.from(h), [0x3c00, 0x7bff, 0x7c00, 0, 1, 0, 0xae66, 0x7c00, 0x3c02]);
    const b = new Uint16Array(2);
    f32ToBf16(new Uint32Array(new Float32Array([1.00390625, 1.01171875]).buffer), b);
    assert.deepEqual(Array.from(b), [0x3f80, 0x3f82]);
    // one head of 4 rows: [r0 r1 r2 r3] -> [r0 r2 r1 r3]
    assert.deepEqual(Array.from(permuteRows(new Uint8Array([0, 1, 2, 3]), 4, 1, 1, 'x')), [0, 2, 1, 3]);
  });
});
