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

test('detokenize refuses ids that are not int32 vocabulary ids, naming where', async () => {
  const n = model.info.vocabularySize;
  const bad = [
    [[2 ** 32 + 5], /tokens\[0\] but received 4294967301/],
    [[1, 2 ** 40], /tokens\[1\] but received 1099511627776/],
    [[1, n], new RegExp(`between 0 and ${n - 1}, for tokens\\[1\\] but received ${n}`)],
    [[-1], /received -1/],
    [[NaN], /received NaN/],
    [[Infinity], /received Infinity/],
    [[0.5], /received 0\.5/],
    [['5'], /received a value of type string/],
    [[5n], /received a value of type bigint/],
    [new Int32Array([5, n]), /tokens\[1\] but received/],
    [new Int32Array([-7]), /tokens\[0\] but received -7/],
  ];
  for (const [tokens, message] of bad) {
    await assert.rejects(model.detokenize(tokens), (err) => {
      assert.equal(err.code, 'ERR_INVALID_ARGUMENT');
      assert.match(err.message, message);
      return true;
    }, String(tokens));
  }
  // eslint-disable-next-line no-sparse-arrays
  await assert.rejects(model.detokenize([5, , 6]), { code: 'ERR_INVALID_ARGUMENT', message: /tokens\[1\] but received a hole/ });
  await assert.rejects(model.detokenize(new Array(3)), { code: 'ERR_INVALID_ARGUMENT', message: /tokens\[0\]/ });
  await assert.rejects(model.detokenize('hello'), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(model.detokenize(new Uint32Array([5])), { code: 'ERR_INVALID_ARGUMENT' });
  // The extremes of the range are fine, from arrays and Int32Arrays alike.
  const ends = [0, n - 1];
  assert.equal(await model.detokenize(ends), await model.detokenize(Int32Array.from(ends)));
  assert.equal(await model.detokenize([]), '');
});
