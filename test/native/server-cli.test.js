// `minigpt serve` as a user runs it: listens on 127.0.0.1, answers once loaded, warns when bound
// elsewhere without a key, and on SIGTERM finishes what runs, refuses new work and exits 0.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { makeFixtures, root } from '../helpers.js';

const cli = join(root, 'dist', 'cli', 'index.js');
let fx;
before(async () => {
  fx = await makeFixtures();
});
after(async () => {
  await fx?.cleanup();
});

/** Starts `minigpt serve`; resolves with the child, its base URL and its stderr so far. */
async function startServe(args, env = {}) {
  const child = spawn(process.execPath, [cli, 'serve', '--model', fx.model, '--projector', fx.projector, '--port', '0', '--threads', '1', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const deadline = Date.now() + 60_000;
  while (!/listening on (http:\/\/\S+)/.test(stderr)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const base = /listening on (http:\/\/\S+)/.exec(stderr)[1];
  while ((await fetch(`${base}/health`)).status !== 200) {
    if (Date.now() > deadline) throw new Error(`serve never became ready: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, base, stderr: () => stderr };
}

test('serve binds 127.0.0.1, answers, and exits 0 on SIGTERM after finishing a running stream', async (t) => {
  const { child, base, stderr } = await startServe([]);
  t.after(() => child.kill('SIGKILL'));
  assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.doesNotMatch(stderr(), /without an API key/);
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], stream: true, temperature: 0, max_tokens: 40 }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  await reader.read();  // the stream has begun
  child.kill('SIGTERM');
  let text = '';
  for (let r = await reader.read(); !r.done; r = await reader.read()) text += Buffer.from(r.value).toString();
  assert.match(text, /data: \[DONE\]/, 'the running stream was finished, not cut');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, stderr());
  assert.match(stderr(), /SIGTERM/);
});

test('serve on another address without a key warns; with a key it does not', async (t) => {
  const open = await startServe(['--host', '0.0.0.0']);
  t.after(() => open.child.kill('SIGKILL'));
  assert.match(open.stderr(), /without an API key/);
  open.child.kill('SIGTERM');
  assert.equal((await once(open.child, 'exit'))[0], 0);
  const keyed = await startServe(['--host', '0.0.0.0'], { MINIGPT_API_KEY: 'k1' });
  t.after(() => keyed.child.kill('SIGKILL'));
  assert.doesNotMatch(keyed.stderr(), /without an API key/);
  assert.equal((await fetch(`${keyed.base.replace('0.0.0.0', '127.0.0.1')}/v1/models`)).status, 401);
  keyed.child.kill('SIGTERM');
  assert.equal((await once(keyed.child, 'exit'))[0], 0);
});

test('serve with a bad flag or a missing model is a usage error, exit 2', async () => {
  for (const args of [['serve'], ['serve', '--model', fx.model, '--port', '70000'], ['serve', '--model', fx.model, '--parralel', '2']]) {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const [code] = await once(child, 'exit');
    assert.equal(code, 2, `${args.join(' ')}: ${stderr}`);
    assert.match(stderr, /^minigpt serve: .*See 'minigpt serve --help'/);
  }
});
