// Streaming never splits a UTF-8 character, even when a model spells one out byte by byte.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { writeChainLlama } from '../fixtures/chain-llama.js';

let dir, model, idOf;
// "▁cat" → 🦙 as F0 9F A6 99 → "▁dog" → 日 as E6 97 A5 → "▁is" → é as C3 A9 → </s>
const chain = [
  ['▁cat', '<0xF0>'], ['<0xF0>', '<0x9F>'], ['<0x9F>', '<0xA6>'], ['<0xA6>', '<0x99>'], ['<0x99>', '▁dog'],
  ['▁dog', '<0xE6>'], ['<0xE6>', '<0x97>'], ['<0x97>', '<0xA5>'], ['<0xA5>', '▁is'],
  ['▁is', '<0xC3>'], ['<0xC3>', '<0xA9>'], ['<0xA9>', '</s>'],
];
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-utf8-'));
  const path = join(dir, 'chain.gguf');
  ({ idOf } = await writeChainLlama(path, chain));
  model = await loadModel({ model: path, threads: 1 });
});
after(async () => {
  await model?.dispose();
  await rm(dir, { recursive: true, force: true });
});

test('multi-byte characters arrive whole, in the piece of their last byte', async () => {
  const session = model.createSession({ template: 'none' });
  const pieces = [];
  for await (const piece of session.stream('cat', { temperature: 0, maxTokens: 50 })) pieces.push(piece);
  assert.deepEqual(pieces.map((p) => p.token), chain.slice(0, -1).map(([, to]) => idOf(to)));
  assert.deepEqual(pieces.map((p) => p.text), ['', '', '', '🦙', ' dog', '', '', '日', ' is', '', 'é']);
  assert.equal(session.stats.generatedTokens, 11);
  await session.dispose();
});

test('a stream cut inside a character releases the bytes it has (as U+FFFD) at the end', async () => {
  const session = model.createSession({ template: 'none' });
  const pieces = [];
  for await (const piece of session.stream('cat', { temperature: 0, maxTokens: 2 })) pieces.push(piece);
  assert.equal(pieces.map((p) => p.text).join(''), '\uFFFD');
  await session.dispose();
});

test('every piece carries the id of a token the model made, so the ids detokenize to the text', async () => {
  const session = model.createSession({ template: 'none' });
  for (const maxTokens of [1, 2, 3, 4, 6, 7, 10, 50]) {
    const pieces = [];
    const stream = session.stream('cat', { temperature: 0, maxTokens });
    let step;
    while (!(step = await stream.next()).done) pieces.push(step.value);
    const want = chain.slice(0, Math.min(maxTokens, chain.length - 1)).map(([, to]) => idOf(to));
    assert.deepEqual(pieces.map((p) => p.token), want, `maxTokens ${maxTokens}`);
    const text = pieces.map((p) => p.text).join('');
    // The bytes of a character the stream ended inside become one U+FFFD, as detokenize reads them.
    assert.equal(await model.detokenize(want), text, `maxTokens ${maxTokens}`);
    assert.equal(step.value.finishReason, maxTokens < chain.length ? 'length' : 'stop', `maxTokens ${maxTokens}`);
    await session.reset();
  }
  await session.dispose();
});
