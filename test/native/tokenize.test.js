// model.tokenize / detokenize against llama.cpp's own llama-tokenize on the same file.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { llamaTokenize, makeFixtures, oraclesBuilt } from '../helpers.js';

const skip = !oraclesBuilt && 'llama.cpp oracles not built (npm install builds them)';
let fx, model;
before(async () => {
  fx = await makeFixtures();
  model = await loadModel({ model: fx.model });
});
after(async () => {
  await model?.dispose();
  await fx?.cleanup();
});

const texts = [
  'Hello world',
  'What is in this picture?',
  ' leading space',
  '  two leading spaces and trailing  ',
  'café, naïve, jalapeño, über',
  '日本語の文章と中文',
  'emoji: 🦙🖼️👍🏽 done',
  'mixed 123 numbers, punctuation!?; and\nnew\tlines',
  '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n',
  '<s>bos in text</s>',
];

for (const text of texts) {
  test(`tokenize matches llama-tokenize: ${JSON.stringify(text).slice(0, 40)}`, { skip }, async () => {
    for (const special of [true, false]) {
      for (const bos of [true, false]) {
        const ours = Array.from(await model.tokenize(text, { special, addBos: bos }));
        const theirs = await llamaTokenize(fx.model, text, { bos, special });
        assert.deepEqual(ours, theirs, `special=${special} bos=${bos}`);
      }
    }
  });
}

test('detokenize inverts tokenize for plain text', async () => {
  for (const text of texts.filter((t) => !t.includes('<'))) {
    const tokens = await model.tokenize(text);
    assert.equal(await model.detokenize(tokens), text);
  }
});

test('detokenize renders special tokens only when asked', async () => {
  const tokens = await model.tokenize('<|im_start|>user', { special: true });
  const plain = await model.detokenize(tokens);
  const rendered = await model.detokenize(tokens, { special: true });
  assert.ok(!plain.includes('<|im_start|>'));
  assert.equal(rendered, '<|im_start|>' + plain);
});

test('empty text is no tokens, or BOS alone', async () => {
  assert.deepEqual(Array.from(await model.tokenize('')), []);
  assert.deepEqual(Array.from(await model.tokenize('', { addBos: true })), [model.info.bosToken]);
});

test('detokenize rejects ids outside the vocabulary', async () => {
  await assert.rejects(model.detokenize([model.info.vocabularySize]), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(model.detokenize([-1]), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(model.detokenize([1.5]), { code: 'ERR_INVALID_ARGUMENT' });
});
