// loadModel({ isolate: true }): the model lives in a process of its own behind the same API.
// Its answers, embeddings, stats and tokens equal the in-process model's; when that process is
// killed (as the OOM killer or a GPU driver reset would), the running stream and every later
// call reject with ERR_BACKEND_LOST, the app lives, and the model loads again.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { makeFixtures } from '../helpers.js';

let fx;
before(async () => {
  fx = await makeFixtures();
});
after(async () => {
  await fx?.cleanup();
});

const greedy = { temperature: 0, maxTokens: 16 };

/** Everything a caller can observe of one model, through the public API. */
async function observe(model) {
  const session = model.createSession({ systemPrompt: 'Be brief.' });
  const first = await session.ask([fx.images.pngBytes, 'What is here?'], greedy);
  const second = await session.ask('And the colours?', greedy);
  const stats = session.stats;
  await session.reset();
  const afterReset = await session.ask('Once more.', greedy);
  const embedding = await model.encodeImage(fx.images.pngBytes);
  const rows = embedding.toFloat32Array();
  const chat = await model.createSession().chat([{ role: 'user', content: [embedding, 'Describe it.'] }], greedy).next();
  const tokens = Array.from(await model.tokenize('hello world'));
  const text = await model.detokenize(tokens);
  return { first, second, stats, afterReset, nTokens: embedding.nTokens, nEmbd: embedding.nEmbd, rows: Array.from(rows.subarray(0, 64)), rowCount: rows.length, chat: chat.value, tokens, text, info: model.info };
}

test('an isolated model answers, encodes, counts and tokenizes exactly as the in-process one', { timeout: 120_000 }, async () => {
  const local = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const expected = await observe(local);
  await local.dispose();
  const isolated = await loadModel({ model: fx.model, projector: fx.projector, threads: 2, isolate: true });
  const got = await observe(isolated);
  await isolated.dispose();
  assert.ok(expected.first.length > 0);
  assert.deepEqual(got, expected);
});

/** The pids of this process's children running the isolated model. */
function modelProcesses() {
  try {
    return execFileSync('pgrep', ['-P', String(process.pid), '-f', 'isolate/host.js'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

test('a killed model process rejects the running stream and later calls with ERR_BACKEND_LOST; the app loads again', { timeout: 120_000 }, async () => {
  const model = await loadModel({ model: fx.model, threads: 1, isolate: true, contextSize: 1024 });
  const [pid] = modelProcesses();
  assert.ok(pid > 0, 'the model runs in a child process');
  const session = model.createSession();
  let pieces = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of session.stream('Go on and on.', { temperature: 0, maxTokens: 100_000 })) {
        if (++pieces === 3) process.kill(pid, 'SIGKILL');
      }
    })(),
    (err) => {
      assert.equal(err.code, 'ERR_BACKEND_LOST');
      assert.match(err.message, /killed by SIGKILL/);
      return true;
    },
  );
  // Cut within the tokens already on their way, not after the context filled (1024).
  assert.ok(pieces < 200, `${pieces} pieces after the kill`);
  assert.equal(session.stats.generatedTokens >= 3, true);
  await assert.rejects(model.createSession().ask('Hello?'), { code: 'ERR_BACKEND_LOST' });
  await assert.rejects(model.encodeImage(fx.images.pngBytes), (err) => ['ERR_BACKEND_LOST', 'ERR_NO_PROJECTOR'].includes(err.code));
  await assert.rejects(model.tokenize('x'), { code: 'ERR_BACKEND_LOST' });
  await model.dispose();
  const again = await loadModel({ model: fx.model, threads: 1, isolate: true });
  assert.ok((await again.createSession().ask('Hello', greedy)).length > 0);
  await again.dispose();
  assert.deepEqual(modelProcesses(), [], 'no model process left behind');
});

test('an isolated load that fails rejects with the loader\'s typed error and leaves no process', { timeout: 60_000 }, async () => {
  await assert.rejects(loadModel({ model: fx.model, projector: fx.model, isolate: true }), (err) => err.code?.startsWith('ERR_PROJECTOR') || err.code === 'ERR_MODEL_LOAD');
  assert.deepEqual(modelProcesses(), []);
});
