// The tiny test models: their layout, their behaviour, and (when llama.cpp's tools have
// been built into build/oracles) proof that llama.cpp itself accepts and runs them.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { readGgufHeader } from '../../dist/gguf/read.js';
import { GgmlType, GgufValueType, getArray, getBool, getString, getU32 } from '../../dist/gguf/types.js';
import { checkMmprojHeader, checkTextModelHeader } from '../../dist/load-plan/projector-check.js';
import { CHATML_TEMPLATE, writeTinyLlama, writeTinyMmproj } from '../../tools/fixtures/models.js';
import { greedy, loadReferenceLlama } from '../fixtures/reference-llama.js';

const ORACLES = fileURLToPath(new URL('../../build/oracles/', import.meta.url));
const TOKENIZE = join(ORACLES, 'llama-tokenize');
const GREEDY = join(ORACLES, 'minigpt-oracle');

let dir;
let llama;
let llamaF16;
let mmproj;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-fixtures-'));
  llama = await writeTinyLlama(join(dir, 'llama.gguf'));
  llamaF16 = await writeTinyLlama(join(dir, 'llama-f16.gguf'), { type: 'f16' });
  mmproj = await writeTinyMmproj(join(dir, 'mmproj.gguf'));
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

describe('writeTinyLlama', () => {
  test('has the keys llama.cpp needs, with the types it insists on', async () => {
    const h = await readGgufHeader(llama.path);
    assert.equal(getString(h, 'general.architecture'), 'llama');
    const u32 = {
      'llama.context_length': 1024, 'llama.embedding_length': 64, 'llama.block_count': 2, 'llama.feed_forward_length': 160,
      'llama.attention.head_count': 4, 'llama.attention.head_count_kv': 2, 'tokenizer.ggml.bos_token_id': 1,
      'tokenizer.ggml.eos_token_id': 2, 'tokenizer.ggml.unknown_token_id': 0,
    };
    for (const [key, value] of Object.entries(u32)) assert.equal(getU32(h, key), value, key);
    assert.equal(h.metadata.get('llama.attention.layer_norm_rms_epsilon').type, GgufValueType.FLOAT32);
    assert.equal(h.metadata.get('llama.rope.freq_base').value, 10000);
    assert.equal(getString(h, 'tokenizer.ggml.model'), 'llama');
    assert.equal(getBool(h, 'tokenizer.ggml.add_bos_token'), true);
    assert.equal(getString(h, 'tokenizer.chat_template'), CHATML_TEMPLATE);
    assert.ok(CHATML_TEMPLATE.includes("'\\n'"), 'the template holds Jinja escapes, not raw newlines');
    assert.deepEqual(checkTextModelHeader(h), []);
  });

  test('vocabulary: specials, 256 byte tokens, then normal pieces with descending scores', async () => {
    const h = await readGgufHeader(llama.path);
    const tokens = getArray(h, 'tokenizer.ggml.tokens', GgufValueType.STRING);
    const types = getArray(h, 'tokenizer.ggml.token_type', GgufValueType.INT32);
    const scores = getArray(h, 'tokenizer.ggml.scores', GgufValueType.FLOAT32);
    assert.equal(tokens.length, llama.nVocab);
    assert.ok(tokens.length >= 300 && tokens.length <= 1100, `vocab size ${tokens.length}`);
    assert.equal(new Set(tokens).size, tokens.length, 'no duplicate pieces');
    assert.deepEqual(tokens.slice(0, 5), ['<unk>', '<s>', '</s>', '<|im_start|>', '<|im_end|>']);
    assert.deepEqual(types.slice(0, 5), [2, 3, 3, 3, 3]);
    assert.equal(tokens[5], '<0x00>');
    assert.equal(tokens[5 + 0x0a], '<0x0A>');
    assert.equal(tokens[260], '<0xFF>');
    assert.ok(types.slice(5, 261).every((t) => t === 6));
    assert.ok(types.slice(261).every((t) => t === 1));
    for (let i = 262; i < scores.length; i++) assert.ok(scores[i] < scores[i - 1], `score ${i}`);
    for (const piece of ['\u2581', '\u2581the', '\u2581is', '\u2581What', '\u2581picture', 'ing', 'ed', 'th', 'é', 'ñ', '日', '本', '語', '中', '文', 'A', '?']) {
      assert.ok(tokens.includes(piece), piece);
    }
    // SPM merges only pieces whose concatenation is a token: every prefix must exist.
    for (const t of tokens.slice(261)) {
      const chars = [...t];
      for (let k = 1; k < chars.length; k++) assert.ok(tokens.includes(chars.slice(0, k).join('')), `prefix of ${t}`);
    }
  });

  test('tensors, shapes and types (f32 and f16)', async () => {
    for (const [info, type] of [[llama, GgmlType.F32], [llamaF16, GgmlType.F16]]) {
      const h = await readGgufHeader(info.path);
      assert.equal(h.tensors.length, 3 + 9 * 2);
      const shape = (n) => h.tensorsByName.get(n).shape;
      assert.deepEqual(shape('token_embd.weight'), [64, info.nVocab]);
      assert.deepEqual(shape('output.weight'), [64, info.nVocab]);
      assert.deepEqual(shape('blk.1.attn_q.weight'), [64, 64]);
      assert.deepEqual(shape('blk.1.attn_k.weight'), [64, 32]);
      assert.deepEqual(shape('blk.1.attn_output.weight'), [64, 64]);
      assert.deepEqual(shape('blk.0.ffn_down.weight'), [160, 64]);
      assert.equal(h.tensorsByName.get('blk.0.attn_v.weight').type, type);
      assert.equal(h.tensorsByName.get('blk.0.attn_norm.weight').type, GgmlType.F32, 'norms stay F32');
    }
  });

  test('same options give the same bytes; sizes and seed are options', async () => {
    const again = await writeTinyLlama(join(dir, 'again.gguf'));
    assert.deepEqual(await readFile(again.path), await readFile(llama.path));
    const other = await writeTinyLlama(join(dir, 'other.gguf'), { seed: 2, nEmbd: 32, nHead: 2, nHeadKv: 1, nLayer: 1, nFf: 48, nCtx: 256 });
    const h = await readGgufHeader(other.path);
    assert.equal(getU32(h, 'llama.embedding_length'), 32);
    assert.equal(getU32(h, 'llama.context_length'), 256);
    assert.equal(h.tensors.length, 3 + 9);
    const tied = await readGgufHeader((await writeTinyLlama(join(dir, 'tied.gguf'), { tiedOutput: true })).path);
    assert.equal(tied.tensorsByName.has('output.weight'), false);
  });

  test('greedy decoding keeps producing new tokens (reference forward pass)', async () => {
    for (const info of [llama, llamaF16, await writeTinyLlama(join(dir, 's2.gguf'), { seed: 2 })]) {
      const model = await loadReferenceLlama(info.path);
      for (const prompt of [[1], [1, 3, 300, 400, 4], [1, 270, 270, 270, 270]]) {
        const out = greedy(model, prompt, 32);
        const tail = new Set(out.slice(8));
        assert.ok(tail.size >= 12, `only ${tail.size} distinct tokens in ${out.join(' ')}`);
        assert.ok(out.every((t) => t >= 261), 'control and byte tokens are never chosen');
      }
    }
  });
});

describe('writeTinyMmproj', () => {
  test('matches the LLaVA-1.5 layout libmtmd loads', async () => {
    const h = await readGgufHeader(mmproj.path);
    assert.equal(getString(h, 'general.architecture'), 'clip');
    assert.equal(getBool(h, 'clip.has_vision_encoder'), true);
    assert.equal(getString(h, 'clip.projector_type'), 'mlp');
    assert.equal(getU32(h, 'clip.vision.image_size'), 32);
    assert.equal(getU32(h, 'clip.vision.patch_size'), 8);
    assert.equal(mmproj.nImageTokens, 16);
    assert.equal(h.metadata.get('clip.vision.image_mean').arrayType, GgufValueType.FLOAT32);
    const shape = (n) => h.tensorsByName.get(n).shape;
    assert.deepEqual(shape('v.patch_embd.weight'), [8, 8, 3, 48]);
    assert.deepEqual(shape('v.position_embd.weight'), [48, 17]);
    assert.deepEqual(shape('v.class_embd'), [48]);
    assert.deepEqual(shape('v.blk.1.ffn_up.weight'), [48, 80]);
    assert.deepEqual(shape('mm.0.weight'), [48, 96]);
    assert.deepEqual(shape('mm.2.weight'), [96, 64]);
    assert.deepEqual(checkMmprojHeader(h, 64), []);
  });

  test('omitTensor and overrides make negative-test files', async () => {
    const info = await writeTinyMmproj(join(dir, 'neg.gguf'), { omitTensor: ['v.patch_embd.weight'], overrides: { 'clip.vision.image_std': null }, classEmbd: false });
    const h = await readGgufHeader(info.path);
    assert.equal(h.tensorsByName.has('v.patch_embd.weight'), false);
    assert.equal(h.metadata.has('clip.vision.image_std'), false);
    assert.deepEqual(h.tensorsByName.get('v.position_embd.weight').shape, [48, 16]);
    assert.equal(checkMmprojHeader(h, 64).length, 2);
  });
});

describe('llama.cpp accepts the fixtures', () => {
  const run = (bin, args) => {
    const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `${bin} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
    return r.stdout.trim();
  };
  const idOf = (piece) => llama.tokens.indexOf(piece);

  test('llama-tokenize loads the tiny llama (f32 and f16) and tokenizes with its vocabulary', { skip: !existsSync(TOKENIZE) && 'oracle not built' }, () => {
    for (const info of [llama, llamaF16]) {
      const ids = JSON.parse(run(TOKENIZE, ['-m', info.path, '-p', 'Hello world', '--ids', '--log-disable']));
      assert.deepEqual(ids, [1, idOf('\u2581Hello'), idOf('\u2581world')]);
    }
    const chat = JSON.parse(run(TOKENIZE, ['-m', llama.path, '-p', '<|im_start|>user\nWhat is in the picture? 日本語<|im_end|>', '--ids', '--log-disable']));
    assert.deepEqual(chat.slice(0, 2), [1, 3], 'control tokens are parsed as specials');
    assert.equal(chat.at(-1), 4);
    assert.ok(chat.includes(idOf('<0x0A>')), 'newline becomes the <0x0A> byte token');
    for (const piece of ['\u2581picture', '日本語']) assert.ok(chat.includes(idOf(piece)), piece);
  });

  test('llama.cpp greedy decoding matches the JavaScript reference', { skip: !existsSync(GREEDY) && 'oracle not built' }, async () => {
    for (const info of [llama, llamaF16]) {
      const ids = run(GREEDY, ['--model', info.path, '--prompt', 'Hello world', '-n', '24']).split(/\s+/).map(Number);
      const want = greedy(await loadReferenceLlama(info.path), [1, idOf('\u2581Hello'), idOf('\u2581world')], 24);
      assert.deepEqual(ids, want);
    }
  });

  test('libmtmd loads the tiny projector, and the image steers the answer', { skip: !existsSync(GREEDY) && 'oracle not built' }, async () => {
    const answers = [];
    for (const fill of [(i) => (i * 37) & 255, () => 200]) {
      const rgb = join(dir, `img${answers.length}.rgb`);
      await writeFile(rgb, Buffer.from(Array.from({ length: 32 * 32 * 3 }, (_, i) => fill(i))));
      answers.push(run(GREEDY, ['--model', llama.path, '--mmproj', mmproj.path, '--rgb', rgb, '--width', '32', '--height', '32',
        '--prompt', '<__media__>What is in the picture?', '--chat', '-n', '8']));
    }
    for (const a of answers) assert.equal(a.split(/\s+/).length, 8, a);
    assert.notEqual(answers[0], answers[1]);
  });
});
