// Sessions: multi-turn prefix reuse, abort, stop strings, queued streams, dispose.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { collect, loadTinyModel, releaseTinyModel } from '../helpers.js';

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

const greedy = { temperature: 0, maxTokens: 16 };

test('a second turn evaluates only the new tokens and equals evaluating the whole conversation', async () => {
  const session = model.createSession();
  const first = await session.ask([fx.images.pngBytes, 'First question?'], greedy);
  const s1 = session.stats;
  assert.equal(s1.reusedTokens, 0);
  assert.equal(s1.evaluatedTokens, s1.promptTokens);
  assert.equal(s1.generatedTokens, 16);

  const second = await collect(session.stream('Second question?', greedy));
  const s2 = session.stats;
  assert.ok(s2.reusedTokens >= s1.promptTokens, `reused ${s2.reusedTokens} of ${s2.promptTokens}, first prompt ${s1.promptTokens}`);
  assert.equal(s2.evaluatedTokens, s2.promptTokens - s2.reusedTokens);
  // New: the answer's last token (sampled, never evaluated) and the second turn's own text.
  const turnText = '<|im_end|>\n<|im_start|>user\nSecond question?<|im_end|>\n<|im_start|>assistant\n';
  const turnTokens = (await model.tokenize(turnText, { special: true })).length;
  assert.ok(s2.evaluatedTokens <= turnTokens + 2, `evaluated ${s2.evaluatedTokens} tokens for a turn of ${turnTokens}`);
  assert.equal(s2.totalEvaluatedTokens, s1.evaluatedTokens + s2.evaluatedTokens);

  // The same conversation written out in full and evaluated from scratch.
  const fresh = model.createSession({ template: 'none' });
  const whole = [
    '<|im_start|>user\n', fx.images.pngBytes, `First question?<|im_end|>\n<|im_start|>assistant\n${first}<|im_end|>\n`,
    '<|im_start|>user\nSecond question?<|im_end|>\n<|im_start|>assistant\n',
  ];
  const again = await collect(fresh.stream(whole, greedy));
  assert.deepEqual(second.tokens, again.tokens);
  await fresh.dispose();
  await session.dispose();
});

test('an embedding is reused across prompts and sessions without encoding again', async () => {
  const image = await model.encodeImage(fx.images.png);
  assert.equal(image.nTokens, 16);
  assert.equal(image.nEmbd, 64);
  const a = model.createSession();
  const b = model.createSession();
  const x = await a.ask([image, 'Q?'], greedy);
  const y = await b.ask([image, 'Q?'], greedy);
  assert.equal(x, y);
  await image.dispose();  // sessions keep what they use
  const z = await collect(a.stream('More?', greedy));
  assert.equal(z.tokens.length, 16);
  assert.throws(() => image.toFloat32Array(), { code: 'ERR_DISPOSED' });
  await a.dispose();
  await b.dispose();
});

test('abort stops the stream within one token and leaves the session usable', async () => {
  const session = model.createSession();
  const controller = new AbortController();
  const seen = [];
  let atAbort = -1;
  await assert.rejects(
    (async () => {
      for await (const piece of session.stream('Tell me a long story.', { temperature: 0, maxTokens: 500, signal: controller.signal })) {
        seen.push(piece);
        if (seen.length === 3) {
          atAbort = session.stats.generatedTokens;  // the loop runs ahead of the consumer, up to its queue
          controller.abort(new Error('user cancelled'));
        }
      }
    })(),
    (err) => err.code === 'ERR_ABORTED' && err.name === 'AbortError' && err.cause?.message === 'user cancelled',
  );
  assert.equal(seen.length, 3, 'no piece arrives after abort()');
  const ranOn = session.stats.generatedTokens - atAbort;
  assert.ok(ranOn <= 2, `the loop made ${ranOn} tokens after abort()`);
  assert.ok(session.stats.generatedTokens < 500);
  const after = await collect(session.stream('Short answer?', greedy));
  assert.equal(after.tokens.length, 16);
  await session.dispose();
});

test('an already-aborted signal rejects before any work', async () => {
  const session = model.createSession();
  const signal = AbortSignal.abort();
  await assert.rejects(collect(session.stream('x', { signal })), { code: 'ERR_ABORTED' });
  assert.equal(session.stats.promptTokens, 0);
  await session.dispose();
});

test('breaking out of the loop stops generation and keeps the session usable', async () => {
  const session = model.createSession();
  let n = 0;
  let atBreak = -1;
  for await (const _ of session.stream('Count', { temperature: 0, maxTokens: 400 })) {
    if (++n === 2) {
      atBreak = session.stats.generatedTokens;
      break;
    }
  }
  assert.ok(session.stats.generatedTokens - atBreak <= 2, `the loop made ${session.stats.generatedTokens - atBreak} tokens after break`);
  assert.ok(session.stats.generatedTokens < 400);
  assert.equal((await collect(session.stream('Again', greedy))).tokens.length, 16);
  await session.dispose();
});

test('stop strings end the answer before the stop string', async () => {
  const session = model.createSession();
  const full = await session.ask('Say something.', { temperature: 0, maxTokens: 40 });
  await session.reset();
  const stopAt = full.slice(10, 13);
  assert.equal(stopAt.length, 3);
  const cut = await session.ask('Say something.', { temperature: 0, maxTokens: 40, stop: [stopAt] });
  assert.equal(cut, full.slice(0, full.indexOf(stopAt)));
  await session.dispose();
});

test('streams on one session run one after another, in order', async () => {
  const session = model.createSession();
  const order = [];
  const run = (name) => session.ask(name, greedy).then(() => order.push(name));
  await Promise.all([run('one'), run('two'), run('three')]);
  assert.deepEqual(order, ['one', 'two', 'three']);
  await session.dispose();
});

test('dispose during a stream stops it; use after dispose throws ERR_DISPOSED', async () => {
  const session = model.createSession();
  const it = session.stream('Long one', { temperature: 0, maxTokens: 1000 });
  await it.next();
  const closing = session.dispose();
  await it.return();
  await closing;
  assert.throws(() => session.stats, { code: 'ERR_DISPOSED' });
  await assert.rejects(session.ask('x'), { code: 'ERR_DISPOSED' });
  await session.dispose();  // idempotent
});

test('a prompt longer than the context is ERR_CONTEXT_OVERFLOW and the session lives on', async () => {
  const session = model.createSession({ contextSize: 64 });
  await assert.rejects(session.ask('word '.repeat(2000), greedy), (err) => err.code === 'ERR_CONTEXT_OVERFLOW' && /contextSize/.test(err.message));
  const ok = await collect(session.stream('hi', { temperature: 0, maxTokens: 8 }));
  assert.equal(ok.tokens.length, 8);
  const size = session.stats.contextSize;
  assert.ok(size >= 64 && size < 2000, `context of ${size}`);
  const filled = await collect(session.stream('more', { temperature: 0, maxTokens: 5000 }));
  assert.ok(filled.tokens.length > 0 && filled.tokens.length < size, `generated ${filled.tokens.length} in a context of ${size}`);
  assert.ok(session.stats.contextUsed <= size);
  await assert.rejects(session.ask('and more', greedy), { code: 'ERR_CONTEXT_OVERFLOW' });
  await session.dispose();
});

test('tokens are streamed as they are generated, not at the end', async () => {
  const session = model.createSession();
  const arrivals = [];
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  for await (const _ of session.stream('stream please', { temperature: 0, maxTokens: 200 })) arrivals.push(ticks);
  clearInterval(timer);
  assert.equal(arrivals.length, 200);
  assert.ok(new Set(arrivals).size > 2, 'pieces arrived over several turns of the event loop');
  await session.dispose();
});

test('stream options are validated by name, type and range', async () => {
  const session = model.createSession();
  const bad = [{ top_p: 0.5 }, { maxTokens: -1 }, { temperature: Number.NaN }, { topP: 2 }, { stop: [1] }, { stop: [''] }, { signal: {} }, { seed: 1.5 }];
  for (const options of bad) await assert.rejects(session.ask('x', options), { code: 'ERR_INVALID_ARGUMENT' }, JSON.stringify(options));
  await assert.rejects(session.ask('x', { top_p: 0.5 }), /did you mean "topP"/);
  await assert.rejects(session.ask('\uD800 lone surrogate'), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(session.ask([42]), { code: 'ERR_INVALID_ARGUMENT' });
  assert.throws(() => model.createSession({ template: 5 }), { code: 'ERR_INVALID_ARGUMENT' });
  await session.dispose();
});

test('text with NUL bytes is accepted', async () => {
  const session = model.createSession();
  const r = await collect(session.stream('a\u0000b', { temperature: 0, maxTokens: 4 }));
  assert.equal(r.tokens.length, 4);
  await session.dispose();
});
