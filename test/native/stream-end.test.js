// Why a stream ended (issue 15, items 11 and the contextSize note): the generator's return value
// and session.stats carry finishReason; a session keeps to the context size it asked for, even
// below the 256 llama.cpp rounds up to.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { writeChainLlama } from '../fixtures/chain-llama.js';
import { makeFixtures } from '../helpers.js';

let fx, model, dir, chainModel;
// A model that answers "cat" with " dog is big" and then its end-of-generation token.
const chain = [['▁cat', '▁dog'], ['▁dog', '▁is'], ['▁is', '▁big'], ['▁big', '</s>']];
before(async () => {
  fx = await makeFixtures();
  model = await loadModel({ model: fx.model, threads: 2 });
  dir = await mkdtemp(join(tmpdir(), 'minigpt-end-'));
  const path = join(dir, 'chain.gguf');
  await writeChainLlama(path, chain);
  chainModel = await loadModel({ model: path, threads: 1 });
});
after(async () => {
  await model?.dispose();
  await chainModel?.dispose();
  await fx?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

/** Runs a stream to its end by hand: the pieces' text and the generator's return value. */
async function drain(stream) {
  let text = '';
  let step;
  while (!(step = await stream.next()).done) text += step.value.text;
  return { text, result: step.value };
}

test('finishReason: stop at the end of generation or a stop string, length at maxTokens', async () => {
  const session = chainModel.createSession({ template: 'none' });
  assert.equal(session.stats.finishReason, null);
  const cases = [
    [{}, ' dog is big', 'stop'],
    [{ maxTokens: 2 }, ' dog is', 'length'],
    [{ stop: ' is' }, ' dog', 'stop'],
    [{ stop: ['zzz', ' big'] }, ' dog is', 'stop'],
    [{ maxTokens: 0 }, '', 'length'],
  ];
  for (const [options, text, reason] of cases) {
    const got = await drain(session.stream('cat', { temperature: 0, ...options }));
    assert.deepEqual(got, { text, result: { finishReason: reason } }, JSON.stringify(options));
    assert.equal(session.stats.finishReason, reason);
    await session.reset();
  }
  await session.dispose();
});

test('finishReason: aborted when the signal stops the stream; error when it rejects', async () => {
  const session = model.createSession({ template: 'none' });
  const controller = new AbortController();
  await assert.rejects(
    (async () => {
      for await (const _ of session.stream('Hello', { temperature: 0, maxTokens: 64, signal: controller.signal })) controller.abort();
    })(),
    { code: 'ERR_ABORTED' },
  );
  assert.equal(session.stats.finishReason, 'aborted');
  const long = 'word '.repeat(400);
  const small = model.createSession({ template: 'none', contextSize: 64 });
  await assert.rejects(small.ask(long, { maxTokens: 1 }), { code: 'ERR_CONTEXT_OVERFLOW' });
  assert.equal(small.stats.finishReason, 'error');
  await small.dispose();
  await session.dispose();
});

test('finishReason: context when the answer fills the context; the next request then overflows', async () => {
  const session = model.createSession({ template: 'none', contextSize: 48 });
  const { result } = await drain(session.stream('Hello there', { temperature: 0, maxTokens: 500 }));
  assert.deepEqual(result, { finishReason: 'context' });
  assert.equal(session.stats.finishReason, 'context');
  assert.ok(session.stats.contextUsed <= 48, `used ${session.stats.contextUsed} of 48`);
  assert.ok(session.stats.generatedTokens < 48);
  await assert.rejects(session.ask('more', { maxTokens: 4 }), { code: 'ERR_CONTEXT_OVERFLOW' });
  await session.reset();
  assert.equal((await drain(session.stream('Hello', { temperature: 0, maxTokens: 4 }))).result.finishReason, 'length');
  await session.dispose();
});

test('a context below 256 tokens is the size asked for, before and after the first stream', async () => {
  for (const contextSize of [16, 100, 255]) {
    const session = model.createSession({ template: 'none', contextSize });
    assert.equal(session.stats.contextSize, contextSize);
    const prompt = 'word '.repeat(contextSize);  // more positions than the context holds
    await assert.rejects(session.ask(prompt, { maxTokens: 1 }), (err) => {
      assert.equal(err.code, 'ERR_CONTEXT_OVERFLOW');
      assert.match(err.message, new RegExp(`context holds ${contextSize};`));
      return true;
    });
    const { result } = await drain(session.stream('Hi', { temperature: 0, maxTokens: 1000 }));
    assert.equal(result.finishReason, 'context');
    assert.ok(session.stats.contextUsed <= contextSize, `used ${session.stats.contextUsed} of ${contextSize}`);
    assert.equal(session.stats.contextSize, contextSize);
    await session.dispose();
  }
  // Without contextSize: the model's training context (at most 4096), known before any stream.
  const session = model.createSession();
  assert.equal(session.stats.contextSize, Math.min(model.info.contextLength, 4096));
  await session.dispose();
});
