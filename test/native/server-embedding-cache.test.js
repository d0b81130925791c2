// The server's EmbeddingCache: one encode per distinct image, shared by concurrent requests,
// bounded, and safe for requests still holding an embedding the LRU dropped.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { EmbeddingCache } from '../../dist/server/images.js';
import { collect, makeFixtures } from '../helpers.js';

let fx, model, png, other;
before(async () => {
  fx = await makeFixtures();
  model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  png = fx.images.pngBytes;
  other = await readFile(fx.images.pngOther);
});
after(async () => {
  await model?.dispose();
  await fx?.cleanup();
});

const greedy = { temperature: 0, maxTokens: 8 };
// Bounded: a cache that loses a waiter must fail a test, not hang it.
const limit = { timeout: 30_000 };

// The model, counting encodes; with `gated`, each encode waits until open() is called.
function counting({ gated = false } = {}) {
  const calls = [];
  let open;
  const gate = new Promise((resolve) => (open = resolve));
  let started;
  const firstStart = new Promise((resolve) => (started = resolve));
  const made = [];
  const wrapper = {
    async encodeImage(bytes, options) {
      calls.push(bytes);
      started();
      if (gated) await gate;
      const e = await model.encodeImage(bytes, options);
      made.push(e);
      return e;
    },
  };
  return { wrapper, calls, open, firstStart, made };
}

test('the same bytes are encoded once; the embedding is the one the model makes', limit, async () => {
  const m = counting();
  const cache = new EmbeddingCache(m.wrapper, 4);
  const a = await cache.acquire(png);
  const b = await cache.acquire(Buffer.from(png)); // equal bytes, another buffer
  assert.equal(m.calls.length, 1);
  assert.equal(a.embedding, b.embedding);
  assert.equal(a.hash, b.hash);
  assert.match(a.hash, /^[0-9a-f]{64}$/);
  assert.deepEqual(cache.stats(), { hits: 1, misses: 1, entries: 1 });

  const direct = await model.encodeImage(png);
  assert.deepEqual(a.embedding.toFloat32Array(), direct.toFloat32Array());
  await direct.dispose();

  const c = await cache.acquire(other);
  assert.equal(m.calls.length, 2);
  assert.notEqual(c.hash, a.hash);
  assert.deepEqual(cache.stats(), { hits: 1, misses: 2, entries: 2 });
  for (const l of [a, b, c]) l.release();
  await cache.dispose();
  assert.equal(a.embedding.disposed, true);
  assert.equal(c.embedding.disposed, true);
  await assert.rejects(cache.acquire(png), { code: 'ERR_DISPOSED' });
});

test('concurrent misses share one encode, and one waiter aborting does not hurt the others', limit, async () => {
  const m = counting({ gated: true });
  const cache = new EmbeddingCache(m.wrapper, 4);
  const ac = new AbortController();
  const first = cache.acquire(png);
  const quitter = cache.acquire(png, ac.signal);
  const third = cache.acquire(Buffer.from(png));
  await m.firstStart;
  // Let the other two acquires finish hashing and join the encode in progress.
  await new Promise((resolve) => setTimeout(resolve, 50));
  ac.abort(new Error('client went away'));
  await assert.rejects(quitter, (err) => err.code === 'ERR_ABORTED' && err.cause?.message === 'client went away');
  m.open();
  const [a, c] = await Promise.all([first, third]);
  assert.equal(m.calls.length, 1);
  assert.equal(a.embedding, c.embedding);
  assert.equal(a.embedding.disposed, false);
  assert.deepEqual(cache.stats(), { hits: 2, misses: 1, entries: 1 });
  a.release();
  c.release();
  await cache.dispose();
});

test('a failed encode is not cached; its waiters all get the error', limit, async () => {
  const m = counting();
  const cache = new EmbeddingCache(m.wrapper, 4);
  const junk = Buffer.from('this is not an image');
  const both = await Promise.allSettled([cache.acquire(junk), cache.acquire(junk)]);
  for (const r of both) {
    assert.equal(r.status, 'rejected');
    assert.equal(r.reason.code, 'ERR_IMAGE_DECODE');
  }
  assert.equal(m.calls.length, 1);
  assert.equal(cache.size, 0);
  await assert.rejects(cache.acquire(junk), { code: 'ERR_IMAGE_DECODE' });
  assert.equal(m.calls.length, 2, 'the failure was not cached');
  await cache.dispose();
});

test('eviction disposes, but only after the last lease; a held lease still works in a session', limit, async () => {
  const m = counting();
  const cache = new EmbeddingCache(m.wrapper, 1);
  const held = await cache.acquire(png);
  const unheld = await cache.acquire(other);
  assert.equal(cache.size, 1); // png was dropped from the LRU
  unheld.release();
  assert.equal(held.embedding.disposed, false, 'still leased: not disposed yet');

  // The answer with the evicted-but-leased embedding equals the answer with a fresh encode.
  const fresh = await model.encodeImage(png);
  const expected = await collect(model.createSession().stream(['What is this?', fresh], greedy));
  await fresh.dispose();
  const session = model.createSession();
  const got = await collect(session.stream(['What is this?', held.embedding], greedy));
  assert.deepEqual(got.tokens, expected.tokens);
  assert.ok(got.tokens.length > 0);

  held.release();
  held.release(); // idempotent
  assert.equal(held.embedding.disposed, true, 'disposed once its last lease went');
  // The session that used it keeps the image's memory: a follow-up turn still works.
  const followUp = await collect(session.stream('And now?', greedy));
  assert.ok(followUp.tokens.length > 0);
  await session.dispose();

  // png again: a new encode, which evicts `other`; nobody holds `other`, so it goes at once.
  const again = await cache.acquire(png);
  assert.equal(m.calls.length, 3);
  assert.notEqual(again.embedding, held.embedding);
  assert.equal(unheld.embedding.disposed, true);
  assert.deepEqual(cache.stats(), { hits: 0, misses: 3, entries: 1 });
  again.release();
  assert.equal(again.embedding.disposed, false, 'in the LRU: kept');
  await cache.dispose();
  assert.equal(again.embedding.disposed, true);
});

test('maxEntries 0 keeps nothing but still shares concurrent encodes', limit, async () => {
  const m = counting();
  const cache = new EmbeddingCache(m.wrapper, 0);
  const [a, b] = await Promise.all([cache.acquire(png), cache.acquire(png)]);
  assert.equal(a.embedding, b.embedding);
  assert.equal(m.calls.length, 1);
  assert.equal(cache.size, 0);
  a.release();
  assert.equal(a.embedding.disposed, false);
  b.release();
  assert.equal(a.embedding.disposed, true);
  await cache.dispose();
});

test('dispose rejects pending acquires and disposes what their encode makes', limit, async () => {
  const m = counting({ gated: true });
  const cache = new EmbeddingCache(m.wrapper, 4);
  const pending = cache.acquire(png);
  await m.firstStart;
  await cache.dispose();
  await assert.rejects(pending, { code: 'ERR_DISPOSED', name: 'DisposedError' });
  m.open();
  for (let i = 0; i < 100 && m.made.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(m.made.length, 1);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(m.made[0].disposed, true);
  await assert.rejects(cache.acquire(png), { code: 'ERR_DISPOSED' });
  assert.throws(() => new EmbeddingCache(model, -1), { code: 'ERR_INVALID_ARGUMENT' });
  assert.throws(() => new EmbeddingCache(model, 1.5), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(new EmbeddingCache(model, 1).acquire('not bytes'), { code: 'ERR_INVALID_ARGUMENT' });
});
