// A LLaMA folder converted by convertLlama() works like SentencePiece and like the GGUF that
// llama.cpp's own convert_hf_to_gguf.py makes of the same folder: model.tokenize gives
// SentencePiece's own ids on varied text (accents, CJK, emoji, leading spaces, byte
// fallback, MiniGPT-4's prompt markers), llama.cpp's llama-tokenize loads it and agrees, and
// greedy decoding in our library gives the same tokens as on the script's GGUF and as
// llama.cpp's own greedy driver.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, convertLlama, convertGgml } from '../../dist/index.js';
import { writeGgml } from '../fixtures/ggjt.js';
import { collect, llamaTokenize, oracleGreedy, oraclesBuilt } from '../helpers.js';
import { oracleConvert, oracleMissing, sentencePieceEncode, sentencePieceMissing, trainTokenizer, writeLlamaHf } from '../../tools/fixtures/llama-hf.js';

const NO_SPM = sentencePieceMissing();
const NO_ORACLE = oracleMissing();
const NO_TOOLS = oraclesBuilt ? undefined : 'llama.cpp oracles not built (npm install builds them)';

const TEXTS = [
  'Hello world',
  ' leading space',
  '   three leading spaces and trailing  ',
  'Héllo wörld, café naïve façade — Ångström',
  '日本語のテキストです。中文文本',
  'Emoji 🙂 ❤️ 🚀 and a llama 🦙 (byte fallback)',
  'rare: 龘 Ω ß ŉ \u0007 tab\tnew\nline',
  '###Human: <Img><ImageHere></Img> Describe this image. ###Assistant:',
  'Numbers 12345 and 3.14159',
];

let dir, spm, folder, ours, theirs, model;
before(async () => {
  if (NO_SPM) return;
  dir = await mkdtemp(join(tmpdir(), 'minigpt-convert-llama-native-'));
  spm = await trainTokenizer(join(dir, 'spm'));
  folder = join(dir, 'tiny-vicuna');
  await writeLlamaHf(folder, { tokenizer: spm, heads: 4, kvHeads: 2, embd: 64, ff: 96, blocks: 2, seed: 11 });
  ours = join(dir, 'ours.gguf');
  await convertLlama({ input: folder, output: ours });
  model = await loadModel({ model: ours, threads: 2 });
  if (!NO_ORACLE) {
    theirs = join(dir, 'theirs.gguf');
    const r = oracleConvert(folder, theirs, 'f16');
    if (!r.ok) throw new Error(`convert_hf_to_gguf.py failed: ${r.log.slice(-2000)}`);
  }
});
after(async () => {
  await model?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('model.tokenize gives SentencePiece\'s own ids', { skip: NO_SPM }, async () => {
  const expected = sentencePieceEncode(spm, TEXTS);
  for (const [i, text] of TEXTS.entries()) {
    const ids = Array.from(await model.tokenize(text));
    assert.deepEqual(ids, expected[i], `text ${JSON.stringify(text)}`);
  }
  // byte fallback really was exercised: some ids are <0x..> byte tokens (ids 3..258 here)
  assert.ok(expected.flat().some((id) => id >= 3 && id < 259), 'no byte-fallback tokens in the sample');
});

test('llama.cpp\'s llama-tokenize loads our GGUF and agrees', { skip: NO_SPM ?? NO_TOOLS }, async () => {
  for (const text of TEXTS.filter((t) => !t.includes('\u0007'))) {
    assert.deepEqual(await llamaTokenize(ours, text, { special: false }), Array.from(await model.tokenize(text)), `text ${JSON.stringify(text)}`);
  }
});

test('greedy decoding equals the script\'s GGUF, and llama.cpp\'s own greedy loop', { skip: NO_SPM ?? NO_ORACLE ?? NO_TOOLS }, async () => {
  const other = await loadModel({ model: theirs, threads: 2 });
  try {
    for (const prompt of ['Hello world. The quick', '日本語 café 🙂']) {
      const a = await collect(model.createSession({ template: 'none' }).stream(prompt, { temperature: 0, maxTokens: 16 }));
      const b = await collect(other.createSession({ template: 'none' }).stream(prompt, { temperature: 0, maxTokens: 16 }));
      assert.ok(a.tokens.length > 0);
      assert.deepEqual(a.tokens, b.tokens, `prompt ${prompt}`);
      const c = await oracleGreedy({ model: theirs, prompt, chat: false, n: 16 });
      assert.deepEqual(a.tokens, c, `llama.cpp greedy on the script's GGUF, prompt ${prompt}`);
    }
  } finally {
    await other.dispose();
  }
});

for (const ftype of [1, 2]) {
  test(`an old GGML file (ggjt v3, ${ftype === 1 ? 'f16' : 'Q4_0'}) re-wrapped as GGUF loads, tokenizes and decodes as in llama.cpp`, { skip: NO_TOOLS }, async () => {
    const d = await mkdtemp(join(tmpdir(), 'minigpt-ggjt-native-'));
    try {
      const input = join(d, 'ggml-vicuna.bin');
      await writeGgml(input, { ftype, nEmbd: 64, seed: 5 });
      const out = join(d, 'vicuna.gguf');
      await convertGgml({ input, output: out, eps: 1e-6 });
      const m = await loadModel({ model: out, threads: 2 });
      try {
        for (const text of [' the hello world', 'café 日本 🙂 ###']) {
          assert.deepEqual(Array.from(await m.tokenize(text)), await llamaTokenize(out, text, { special: false }), `text ${text}`);
        }
        const a = await collect(m.createSession({ template: 'none' }).stream(' hello world', { temperature: 0, maxTokens: 12 }));
        assert.ok(a.tokens.length > 0);
        assert.deepEqual(a.tokens, await oracleGreedy({ model: out, prompt: ' hello world', chat: false, n: 12 }));
      } finally {
        await m.dispose();
      }
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
}
