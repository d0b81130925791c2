// A prompt that ends with an image (a caption from the image alone): the image's last position
// gives the logits of the first answer token, for libmtmd's projectors and our BLIP-2 one, and
// the session goes on from there as if the whole conversation had been evaluated at once.
// Oracles: llama.cpp + libmtmd's own evaluation (test/oracle/mtmd_greedy.cpp), and for BLIP-2
// embeddings the same driver feeding them to llama_decode as plain embedding rows.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { loadModel } from '../../dist/index.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { writeTinyMmproj } from '../../tools/fixtures/models.js';
import { collect, makeFixtures, oracleGreedy, oracles, oraclesBuilt } from '../helpers.js';

const run = promisify(execFile);
const skip = !oraclesBuilt && 'llama.cpp oracles not built (npm install builds them)';
const N = 16;
const greedy = { temperature: 0, maxTokens: N };
const USER = '<|im_start|>user\n';
const NEXT = '<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n';

/** Greedy ids from llama.cpp with `embd` (Float32Array rows) where `<__media__>` stands in `prompt`. */
async function oracleWithEmbeddings({ model, prompt, embd, dir, n = N }) {
  const file = join(dir, `embd-${embd.length}-${embd[0]}.f32`);
  await writeFile(file, Buffer.from(embd.buffer, embd.byteOffset, embd.byteLength));
  const { stdout } = await run(oracles.greedy, ['--model', model, '--embd', file, '--prompt', prompt, '-n', String(n), '--threads', '2'], { maxBuffer: 1 << 24 });
  const line = stdout.trim();
  return line ? line.split(' ').map(Number) : [];
}

describe('libmtmd projector', () => {
  let fx, model, wide;
  before(async () => {
    fx = await makeFixtures();
    model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
    // 64x64 pixels in 8x8 patches: 64 image tokens, two batches of the smallest batchSize (32).
    wide = join(fx.dir, 'tiny-mmproj-64.gguf');
    await writeTinyMmproj(wide, { nEmbdText: 64, imageSize: 64 });
  });
  after(async () => {
    await model?.dispose();
    await fx?.cleanup();
  });

  const image = () => ({ file: fx.images.rgbFile, width: fx.images.raw.width, height: fx.images.raw.height });

  for (const [name, head] of [['after text', USER], ['alone after BOS', '']]) {
    test(`a prompt ending with the image matches llama.cpp + libmtmd (${name})`, { skip }, async () => {
      const embedding = await model.encodeImage(fx.images.raw);
      const session = model.createSession({ template: 'none' });
      const ours = await collect(session.stream(head ? [head, embedding] : [embedding], greedy));
      const theirs = await oracleGreedy({ model: fx.model, projector: fx.projector, chat: false, prompt: `${head}<__media__>`, n: N, image: image() });
      assert.ok(theirs.length > 0, 'the oracle generated tokens');
      assert.deepEqual(ours.tokens, theirs);
      const headTokens = (await model.tokenize(head, { addBos: true, special: true })).length;
      assert.equal(session.stats.promptTokens, headTokens + embedding.nTokens);
      // The same prompt again re-evaluates only the image, for fresh logits, and answers the same.
      const again = await collect(session.chat([{ role: 'user', content: head ? [head, embedding] : [embedding] }], greedy));
      assert.deepEqual(again.tokens, ours.tokens);
      assert.equal(session.stats.reusedTokens, headTokens);
      await session.dispose();
      await embedding.dispose();
    });
  }

  test('an image split over several batches gives its logits from the last one', { skip }, async () => {
    const m = await loadModel({ model: fx.model, projector: wide, threads: 2 });
    try {
      const embedding = await m.encodeImage(fx.images.raw);
      assert.equal(embedding.nTokens, 64);
      const session = m.createSession({ template: 'none', batchSize: 32 });
      const ours = await collect(session.stream([USER, embedding], greedy));
      const theirs = await oracleGreedy({ model: fx.model, projector: wide, chat: false, prompt: `${USER}<__media__>`, n: N, image: image() });
      assert.ok(theirs.length > 0);
      assert.deepEqual(ours.tokens, theirs);
      await session.dispose();
    } finally {
      await m.dispose();
    }
  });

  test('the next turn reuses the prompt and equals the whole conversation from scratch', { skip }, async () => {
    const embedding = await model.encodeImage(fx.images.raw);
    const session = model.createSession({ template: 'none' });
    const first = await collect(session.stream([USER, embedding], greedy));
    const firstPrompt = session.stats.promptTokens;
    const second = await collect(session.stream(NEXT, greedy));
    const s = session.stats;
    assert.ok(s.reusedTokens >= firstPrompt, `reused ${s.reusedTokens} of ${s.promptTokens}, first prompt ${firstPrompt}`);
    assert.equal(s.evaluatedTokens, s.promptTokens - s.reusedTokens);

    const fresh = model.createSession({ template: 'none' });
    const whole = await collect(fresh.stream([USER, embedding, first.text + NEXT], greedy));
    assert.equal(fresh.stats.reusedTokens, 0);
    assert.deepEqual(second.tokens, whole.tokens);
    const theirs = await oracleGreedy({ model: fx.model, projector: fx.projector, chat: false, prompt: `${USER}<__media__>${first.text}${NEXT}`, n: N, image: image() });
    assert.deepEqual(second.tokens, theirs);
    await fresh.dispose();
    await session.dispose();
    await embedding.dispose();
  });
});

describe('abort while a prompt ending with an image is evaluated', () => {
  let fx, model;
  before(async () => {
    // 128x128 pixels in 8x8 patches: 256 image tokens on a wider LLM, so the prompt takes long
    // enough (tens of ms) for aborts to land inside the image's batches.
    fx = await makeFixtures({ llama: { nEmbd: 256, nLayer: 4, nFf: 512 }, mmproj: { imageSize: 128, nEmbdText: 256 } });
    model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  });
  after(async () => {
    await model?.dispose();
    await fx?.cleanup();
  });

  test('the session stays consistent: a retry and a next turn answer as a fresh session does', async () => {
    const embedding = await model.encodeImage(fx.images.raw);
    assert.equal(embedding.nTokens, 256);
    const messages = [{ role: 'user', content: [USER, embedding] }];
    const reference = model.createSession({ template: 'none', batchSize: 64 });
    const want = await collect(reference.chat(messages, { ...greedy, maxTokens: 4 }));
    assert.equal(want.tokens.length, 4);
    const wantNext = await collect(reference.stream(NEXT, { ...greedy, maxTokens: 4 }));
    // The prompt carried on past the image, from scratch.
    const past = [{ role: 'user', content: [USER, embedding, NEXT] }];
    const scratch = model.createSession({ template: 'none' });
    const wantPast = await collect(scratch.chat(past, { ...greedy, maxTokens: 4 }));
    await scratch.dispose();

    // Aborts are timed against a warm evaluation of the whole prompt (the first one also
    // creates the context).
    const session = model.createSession({ template: 'none', batchSize: 64 });
    await collect(session.chat(messages, { ...greedy, maxTokens: 1 }));
    session.reset();
    const t0 = performance.now();
    await collect(session.chat(messages, { ...greedy, maxTokens: 1 }));
    const took = performance.now() - t0;
    let abortedEarly = 0;
    for (const fraction of [0.05, 0.2, 0.4, 0.6, 0.8, 1.5]) {
      session.reset();
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), Math.max(1, took * fraction));
      try {
        await collect(session.chat(messages, { ...greedy, maxTokens: 4, signal: controller.signal }));
      } catch (err) {
        assert.equal(err.code, 'ERR_ABORTED', `an abort, not ${err.code}: ${err.message}`);
        if (session.stats.generatedTokens === 0) abortedEarly++;
      } finally {
        clearTimeout(timer);
      }
      // First a prompt that goes on past the image: it must not take an image cut short for whole.
      const onward = await collect(session.chat(past, { ...greedy, maxTokens: 4 }));
      assert.deepEqual(onward.tokens, wantPast.tokens, `a longer prompt after an abort at ${fraction} of the prompt`);
      const retry = await collect(session.chat(messages, { ...greedy, maxTokens: 4 }));
      assert.deepEqual(retry.tokens, want.tokens, `retry after an abort at ${fraction} of the prompt`);
      const next = await collect(session.stream(NEXT, { ...greedy, maxTokens: 4 }));
      assert.deepEqual(next.tokens, wantNext.tokens, `next turn after an abort at ${fraction} of the prompt`);
    }
    assert.ok(abortedEarly > 0, 'at least one abort landed before the answer began');
    await session.dispose();
    await reference.dispose();
    await embedding.dispose();
  });
});

describe('BLIP-2 projector', () => {
  let fx, model, path;
  before(async () => {
    fx = await makeFixtures();
    // 40 query tokens: two batches of the smallest batchSize (32).
    path = join(fx.dir, 'tiny-blip2-40.gguf');
    await writeTinyBlip2(path, { nEmbdText: 64, nQuery: 40 });
    model = await loadModel({ model: fx.model, projector: path, threads: 2 });
  });
  after(async () => {
    await model?.dispose();
    await fx?.cleanup();
  });

  for (const [name, head, batchSize] of [['alone after BOS', '', 512], ['after text', 'Picture: ', 512], ['in two batches', 'Picture: ', 32]]) {
    test(`a prompt ending with a BLIP-2 image matches llama.cpp fed the same embeddings (${name})`, { skip }, async () => {
      const embedding = await model.encodeImage(fx.images.raw);
      assert.equal(embedding.nTokens, 40);
      const session = model.createSession({ template: 'none', batchSize });
      const ours = await collect(session.stream(head ? [head, embedding] : [embedding], greedy));
      const theirs = await oracleWithEmbeddings({ model: fx.model, prompt: `${head}<__media__>`, embd: embedding.toFloat32Array(), dir: fx.dir });
      assert.ok(theirs.length > 0, 'the oracle generated tokens');
      assert.deepEqual(ours.tokens, theirs);
      await session.dispose();
      await embedding.dispose();
    });
  }

  test('the next turn after a BLIP-2 image at the end equals the whole conversation from scratch', { skip }, async () => {
    const embedding = await model.encodeImage(fx.images.raw);
    const session = model.createSession({ template: 'none' });
    const first = await collect(session.stream(['Picture: ', embedding], greedy));
    const firstPrompt = session.stats.promptTokens;
    const second = await collect(session.stream(' What is it?', greedy));
    assert.ok(session.stats.reusedTokens >= firstPrompt);
    const fresh = model.createSession({ template: 'none' });
    const whole = await collect(fresh.stream(['Picture: ', embedding, `${first.text} What is it?`], greedy));
    assert.deepEqual(second.tokens, whole.tokens);
    const theirs = await oracleWithEmbeddings({ model: fx.model, prompt: `Picture: <__media__>${first.text} What is it?`, embd: embedding.toFloat32Array(), dir: fx.dir });
    assert.deepEqual(second.tokens, theirs);
    await fresh.dispose();
    await session.dispose();
    await embedding.dispose();
  });

  test("MiniGPT-4's own format never ends with the image: its turn text follows", async () => {
    const embedding = await model.encodeImage(fx.images.raw);
    const session = model.createSession();
    const r = await collect(session.stream([embedding], greedy));
    assert.equal(r.tokens.length, N);
    const tail = await model.tokenize('</Img>###Assistant: ', { special: true });
    const head = await model.tokenize('Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. Please answer my questions.###Human: <Img>', { addBos: true, special: true });
    assert.equal(session.stats.promptTokens, head.length + embedding.nTokens + tail.length);
    await session.dispose();
    await embedding.dispose();
  });
});
