// Cutting a running stream (issue 15, items 4 and 9, and the abandoned iterator): reset() and
// dispose() awaited inside a `for await` over the session's own stream settle; an iterator
// nobody reads or closes any more lets go of its session once collected; embeddings still being
// encoded when their model is disposed reject with ERR_DISPOSED.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadModel } from '../../dist/index.js';
import { loadTinyModel, releaseTinyModel } from '../helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

const greedy = { temperature: 0, maxTokens: 32 };

/** Rejects when `promise` has not settled within `ms`: a hang fails the test instead of stalling it. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('reset() awaited inside a for-await over the same stream cuts it and forgets the conversation', async () => {
  const session = model.createSession();
  const fresh = model.createSession();
  await fresh.ask('Second question?', greedy);
  const freshStats = fresh.stats;
  await session.ask('First question?', greedy);
  const stream = session.stream('Go on', greedy);
  let pieces = 0;
  await within(
    (async () => {
      for await (const _ of stream) {
        pieces++;
        await session.reset();
      }
    })(),
    10_000,
    'the loop around reset()',
  );
  assert.equal(pieces, 1, 'the stream ends at the reset');
  assert.equal(session.stats.finishReason, 'aborted');
  // Forgotten: the next turn is the first of a new conversation.
  await session.ask('Second question?', greedy);
  assert.equal(session.stats.promptTokens, freshStats.promptTokens);
  assert.equal(session.stats.reusedTokens, 0);
  await fresh.dispose();
  await session.dispose();
});

test('reset() from elsewhere cuts a running stream, whose result says aborted', async () => {
  const session = model.createSession();
  const stream = session.stream('Tell me a story', { temperature: 0, maxTokens: 200 });
  const first = await stream.next();
  assert.equal(first.done, false);
  const resetting = session.reset();
  let step;
  let more = 0;
  while (!(step = await within(stream.next(), 10_000, 'stream.next()')).done) more++;
  await within(resetting, 10_000, 'reset()');
  assert.deepEqual(step.value, { finishReason: 'aborted' });
  assert.ok(more < 199, `${more} pieces after the reset`);
  assert.equal(await session.ask('Hi', { ...greedy, maxTokens: 2 }).then((t) => typeof t), 'string');
  await session.dispose();
});

test('dispose() awaited inside a for-await over the same stream settles; the next read rejects', async () => {
  const session = model.createSession();
  await assert.rejects(
    within(
      (async () => {
        for await (const _ of session.stream('Hello', greedy)) await session.dispose();
      })(),
      10_000,
      'the loop around dispose()',
    ),
    { code: 'ERR_DISPOSED' },
  );
  assert.equal(session.disposed, true);
});

test('an abandoned iterator lets go of its session when it is collected', async () => {
  const session = model.createSession();
  await (async () => {
    const stream = session.stream('Tell me a story', { temperature: 0, maxTokens: 500 });
    await stream.next();  // started, holding the session; then dropped without return()
  })();
  const next = session.ask('Hi', { ...greedy, maxTokens: 2 });
  let settled = false;
  next.finally(() => (settled = true)).catch(() => {});
  for (let i = 0; i < 50 && !settled; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(typeof (await within(next, 10_000, 'a stream queued behind an abandoned one')), 'string');
  assert.equal(session.stats.generatedTokens, 2);
  await session.dispose();
});

test('embeddings still being encoded when their model is disposed reject with ERR_DISPOSED', async () => {
  const own = await loadModel({ model: fx.model, projector: fx.projector, threads: 1 });
  const encodes = Array.from({ length: 4 }, () => own.encodeImage(fx.images.png));
  const settled = Promise.allSettled(encodes);
  await new Promise((resolve) => setImmediate(resolve));
  await own.dispose();
  const results = await settled;
  for (const r of results) {
    if (r.status === 'fulfilled') {
      // Finished before dispose() began: disposed with the model.
      assert.equal(r.value.disposed, true);
    } else {
      assert.equal(r.reason.code, 'ERR_DISPOSED');
    }
  }
  assert.ok(results.some((r) => r.status === 'rejected'), 'at least one encode was in flight');
});
