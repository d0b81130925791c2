// A tiny end-to-end MiniGPT-4: tiny Vicuna-shaped LLM + tiny EVA/Q-Former projector, streamed
// through session.stream with the projector's own v0 conversation format.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { kv } from '../../dist/gguf/write.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { collect, makeFixtures } from '../helpers.js';

const SYSTEM = 'Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. Please answer my questions.';
const greedy = { temperature: 0, maxTokens: 12 };
let fx, blip2, llama2, model;
before(async () => {
  fx = await makeFixtures();
  blip2 = join(fx.dir, 'tiny-minigpt4.gguf');
  llama2 = join(fx.dir, 'tiny-minigpt4-llama2.gguf');
  await writeTinyBlip2(blip2, { nEmbdText: 64, promptTemplate: 'minigpt4-v0' });
  await writeTinyBlip2(llama2, { nEmbdText: 64, variant: 'patch_group', promptTemplate: 'minigpt4-llama2' });
  model = await loadModel({ model: fx.model, projector: blip2, threads: 2 });
});
after(async () => {
  await model?.dispose();
  await fx?.cleanup();
});

test('a BLIP-2 projector loads like an mmproj and says what it is', () => {
  assert.equal(model.info.hasVision, true);
  assert.equal(model.info.projectorType, 'blip2');
  assert.equal(model.info.promptTemplate, 'minigpt4-v0');
});

test('images of any size are squashed to the ViT input and give query_count tokens', async () => {
  const image = await model.encodeImage(fx.images.raw);  // 40x30, resized to 28x28
  assert.equal(image.nTokens, 8);
  assert.equal(image.nEmbd, 64);
  const floats = image.toFloat32Array();
  assert.equal(floats.length, 8 * 64);
  assert.ok(floats.every(Number.isFinite) && floats.some((v) => v !== 0));
  const other = await model.encodeImage(fx.images.rawOther);
  assert.notDeepEqual(other.toFloat32Array(), floats);
});

test('the v0 prompt is spliced as MiniGPT-4 does: BOS once, the image between <Img> and </Img>', async () => {
  const image = await model.encodeImage(fx.images.raw);
  const session = model.createSession();
  const ours = await collect(session.stream([image, 'What is this?'], greedy));
  assert.equal(ours.tokens.length, 12);
  const before = await model.tokenize(`${SYSTEM}###Human: <Img>`, { addBos: true, special: true });
  const afterIds = await model.tokenize('</Img> What is this?###Assistant: ', { special: true });
  assert.equal(before[0], model.info.bosToken);
  assert.ok(!Array.from(afterIds).includes(model.info.bosToken));
  assert.equal(session.stats.promptTokens, before.length + image.nTokens + afterIds.length);

  // The same prompt written out by hand and evaluated as is gives the same answer.
  const manual = model.createSession({ template: 'none' });
  const again = await collect(manual.stream([`${SYSTEM}###Human: <Img>`, image, '</Img> What is this?###Assistant: '], greedy));
  assert.deepEqual(ours.tokens, again.tokens);

  // A second turn follows the original: answer, then ###Human: ...###Assistant: , reusing the context.
  const first = session.stats.promptTokens;
  await collect(session.stream('And the colours?', greedy));
  assert.ok(session.stats.reusedTokens >= first);
  await session.dispose();
  await manual.dispose();
});

test('the MiniGPT-4 Llama-2 variant groups 4 patch tokens per image token', async () => {
  const m = await loadModel({ model: fx.model, projector: llama2, threads: 2 });
  assert.equal(m.info.promptTemplate, 'minigpt4-llama2');
  const image = await m.encodeImage(fx.images.raw);
  assert.equal(image.nTokens, 1);  // (28 / 14)^2 = 4 patches, grouped by 4
  const session = m.createSession();
  const r = await collect(session.stream([image, 'Describe it.'], greedy));
  assert.equal(r.tokens.length, 12);
  const head = await m.tokenize('[INST] <Img>', { addBos: true, special: true });
  const tail = await m.tokenize('</Img> Describe it. [/INST] ', { special: true });
  assert.equal(session.stats.promptTokens, head.length + 1 + tail.length);
  await m.dispose();
});

test('bad BLIP-2 projectors are refused with typed errors naming the problem', async () => {
  const cases = [
    ['no-proj.gguf', { omitTensor: 'proj.weight' }, 'ERR_PROJECTOR_LOAD', /proj\.weight/],
    ['no-cross.gguf', { omitTensor: 'qf.blk.0.cross_k.weight' }, 'ERR_PROJECTOR_LOAD', /qf\.blk\.0\.cross_k\.weight/],
    ['wide.gguf', { nEmbdText: 96 }, 'ERR_PROJECTOR_MISMATCH', /96.*64/],
    ['odd.gguf', { overrides: { 'blip2.vision.patch_size': kv.u32('blip2.vision.patch_size', 5) } }, 'ERR_PROJECTOR_LOAD', /multiple/],
  ];
  for (const [name, options, code, pattern] of cases) {
    const path = join(fx.dir, name);
    await writeTinyBlip2(path, { nEmbdText: 64, ...options });
    await assert.rejects(loadModel({ model: fx.model, projector: path }), (err) => {
      assert.equal(err.code, code, `${name}: ${err.message}`);
      assert.match(err.message, pattern);
      return true;
    });
  }
});
