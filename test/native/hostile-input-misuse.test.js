// Issue 6, "Bad input table" and "Misuse": misuse of models, sessions and embeddings.
// Every input a user or a file can throw at the package gets a typed error with a stable `code`
// (or, for the odd-but-valid rows, the right picture), and the process lives on: every test here
// runs in this process, after the others. The other groups: test/native/hostile-input-*.test.js.
//
// Rows with a good test elsewhere are not repeated here:
//
// | row                                            | file                          | test
// |------------------------------------------------|-------------------------------|------------------------------------------------
// | streams started together run in call order     | test/native/session.test.js   | streams on one session run one after another, in order
// | abort before start (stream; load)              | test/native/session.test.js   | an already-aborted signal rejects before any work
// |                                                | test/native/errors.test.js    | abort and a throwing onProgress stop a load
// | use after dispose; dispose twice (sequential)  | test/native/errors.test.js    | use after dispose is ERR_DISPOSED; dispose is idempotent
// | dispose during a stream, iterator closed       | test/native/session.test.js   | dispose during a stream stops it; use after dispose ...
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { rejectsWith } from '../assertions.js';
import { loadModel } from '../../dist/index.js';
import { collect, loadTinyModel, releaseTinyModel, testPixels } from '../helpers.js';

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

const greedy = (maxTokens) => ({ temperature: 0, maxTokens });

const raw = testPixels();
// ---------------------------------------------------------------------------------------------
// Misuse

test('two streams iterated at once on one session: the second starts after the first ends', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const log = [];
  const drain = async (name, stream) => {
    for await (const _ of stream) log.push(name);
    log.push(`${name} end`);
  };
  await Promise.all([drain('a', session.stream('first', greedy(6))), drain('b', session.stream('second', greedy(6)))]);
  assert.deepEqual(log, [...Array(6).fill('a'), 'a end', ...Array(6).fill('b'), 'b end']);
  await session.dispose();
});

test('abort while queued behind another stream: only the queued one rejects', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const controller = new AbortController();
  const first = collect(session.stream('one', greedy(30)));
  const second = session.ask('two', { ...greedy(30), signal: controller.signal });
  const third = collect(session.stream('three', greedy(3)));
  controller.abort(new Error('changed my mind'));
  await assert.rejects(second, (err) => err.code === 'ERR_ABORTED' && err.name === 'AbortError' && err.cause.message === 'changed my mind');
  assert.equal((await first).tokens.length, 30);
  assert.equal((await third).tokens.length, 3);
  await session.dispose();
});

test('dispose during a stream: the consumer\'s next read is ERR_DISPOSED, queued streams too', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const stream = session.stream('long one', greedy(1000));
  const first = stream.next();  // takes the session's lock
  const queued = session.ask('queued', greedy(200)).then(() => 'finished', (err) => err.code);
  assert.equal((await first).done, false);
  let pieces = 1;
  let disposing;
  await rejectsWith(
    (async () => {
      for (let r = await stream.next(); !r.done; r = await stream.next()) if (++pieces === 3) disposing = session.dispose();
    })(),
    'ERR_DISPOSED',
    /session has been disposed/,
  );
  assert.equal(pieces, 3, 'no piece reaches the consumer after dispose()');
  await disposing;
  assert.equal(await queued, 'ERR_DISPOSED');
  assert.equal(session.disposed, true);
  await rejectsWith(session.ask('x'), 'ERR_DISPOSED');
});

test('dispose does not wait for an iterator its consumer abandoned', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const it = session.stream('abandoned', greedy(1000));
  assert.equal((await it.next()).done, false);
  const start = performance.now();
  await session.dispose();
  assert.ok(performance.now() - start < 2000, 'dispose returned while the iterator is still open');
  await rejectsWith(it.next(), 'ERR_DISPOSED');
  assert.deepEqual(await it.next(), { done: true, value: undefined });
});

test('dispose twice at once, and while in use, for model, session and embedding', { timeout: 20_000 }, async () => {
  const m = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const embedding = await m.encodeImage(raw);
  await Promise.all([embedding.dispose(), embedding.dispose()]);
  assert.throws(() => embedding.toFloat32Array(), { code: 'ERR_DISPOSED' });
  await rejectsWith(m.createSession().ask([embedding, 'x']), 'ERR_INVALID_ARGUMENT', /disposed image embedding/);
  const session = m.createSession();
  const asking = session.ask('x', greedy(50)).then(() => 'finished', (err) => err.code);
  await Promise.all([session.dispose(), session.dispose(), m.dispose(), m.dispose()]);
  assert.equal(await asking, 'ERR_DISPOSED');
  assert.equal(m.disposed && session.disposed, true);
  await m.dispose();
});

test('disposing a model while its sessions stream stops them all with ERR_DISPOSED', { timeout: 20_000 }, async () => {
  const m = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const image = await m.encodeImage(raw);
  const sessions = [m.createSession(), m.createSession(), m.createSession({ template: 'none' })];
  const counts = sessions.map(() => 0);
  let started;
  const allStarted = new Promise((resolve) => (started = resolve));
  const runs = sessions.map(async (s, i) => {
    for await (const _ of s.stream([image, `stream ${i}`], greedy(2000))) if (++counts[i] === 2 && counts.every((c) => c >= 2)) started();
  });
  const settled = Promise.allSettled(runs);
  await allStarted;
  await m.dispose();
  const results = await settled;
  for (const [i, r] of results.entries()) {
    assert.equal(r.status, 'rejected', `session ${i} finished with ${counts[i]} tokens`);
    assert.equal(r.reason.code, 'ERR_DISPOSED');
    assert.ok(counts[i] < 2000);
  }
  assert.ok(sessions.every((s) => s.disposed) && image.disposed);
  await rejectsWith(m.encodeImage(raw), 'ERR_DISPOSED');
  // The process and the shared model of the other tests are fine.
  assert.equal((await collect(model.createSession().stream('after', greedy(2)))).tokens.length, 2);
});
