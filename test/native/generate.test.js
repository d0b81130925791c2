// Greedy generation through session.stream equals llama.cpp + libmtmd's own path on the
// same files (the oracle driver in test/oracle, built from the same source).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { collect, loadTinyModel, oracleGreedy, oraclesBuilt, releaseTinyModel } from '../helpers.js';

const skip = !oraclesBuilt && 'llama.cpp oracles not built (npm install builds them)';
const N = 24;
let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

const greedy = { temperature: 0, maxTokens: N };

for (const prompt of ['What is in this picture?', 'Describe the colours.', 'café 日本 🦙?']) {
  test(`text-only chat matches the oracle: ${prompt}`, { skip }, async () => {
    const session = model.createSession();
    const ours = await collect(session.stream(prompt, greedy));
    const theirs = await oracleGreedy({ model: fx.model, prompt, n: N });
    assert.ok(theirs.length > 0, 'the oracle generated tokens');
    assert.deepEqual(ours.tokens, theirs);
    await session.dispose();
  });

  for (const which of ['png', 'pngOther']) {
    test(`image chat matches the oracle: ${which} / ${prompt}`, { skip }, async () => {
      const raw = which === 'png' ? fx.images.raw : fx.images.rawOther;
      const file = which === 'png' ? fx.images.rgbFile : fx.images.rgbOtherFile;
      const session = model.createSession();
      // Strings in content are text; an image file goes in as its bytes or an embedding.
      const image = await model.encodeImage(fx.images[which]);
      const ours = await collect(session.stream([image, prompt], greedy));
      const theirs = await oracleGreedy({
        model: fx.model, projector: fx.projector, prompt: `<__media__>${prompt}`, n: N,
        image: { file, width: raw.width, height: raw.height },
      });
      assert.ok(theirs.length > 0);
      assert.deepEqual(ours.tokens, theirs);
      await session.dispose();
    });
  }
}

test('image in the middle of the text and a system prompt match the oracle', { skip }, async () => {
  const session = model.createSession({ systemPrompt: 'You are terse.' });
  const ours = await collect(session.stream(['Look: ', fx.images.pngBytes, ' what is it?'], greedy));
  const theirs = await oracleGreedy({
    model: fx.model, projector: fx.projector, system: 'You are terse.', prompt: 'Look: <__media__> what is it?', n: N,
    image: { file: fx.images.rgbFile, width: 40, height: 30 },
  });
  assert.deepEqual(ours.tokens, theirs);
  await session.dispose();
});

test("template 'none' evaluates the text as written, with BOS once", { skip }, async () => {
  const session = model.createSession({ template: 'none' });
  const prompt = '<|im_start|>user\nraw prompt<|im_end|>\n';
  const ours = await collect(session.stream([prompt, fx.images.pngBytes, 'tail'], greedy));
  const theirs = await oracleGreedy({
    model: fx.model, projector: fx.projector, chat: false, prompt: `${prompt}<__media__>tail`, n: N,
    image: { file: fx.images.rgbFile, width: 40, height: 30 },
  });
  assert.deepEqual(ours.tokens, theirs);
  await session.dispose();
});

test('the same greedy request twice gives the same tokens (determinism)', async () => {
  const a = model.createSession();
  const b = model.createSession();
  const x = await collect(a.stream([fx.images.pngBytes, 'Again?'], greedy));
  const y = await collect(b.stream([fx.images.pngBytes, 'Again?'], greedy));
  assert.deepEqual(x.tokens, y.tokens);
  assert.equal(x.tokens.length, N);
  await a.dispose();
  await b.dispose();
});

test('a seeded sampler is reproducible, different seeds differ', async () => {
  const s = model.createSession();
  const opts = { temperature: 1.5, topK: 0, topP: 1, minP: 0, maxTokens: 32 };
  const one = await collect(s.stream('seeded', { ...opts, seed: 7 }));
  await s.reset();
  const two = await collect(s.stream('seeded', { ...opts, seed: 7 }));
  await s.reset();
  const three = await collect(s.stream('seeded', { ...opts, seed: 8 }));
  assert.deepEqual(one.tokens, two.tokens);
  assert.notDeepEqual(one.tokens, three.tokens);
  await s.dispose();
});
