// Options a careless user gets wrong (issue 15, item 5 and "Also noticed"): thread counts past
// the machine's CPUs are capped and reported; file: URLs name files; stop takes one string or
// several, never an empty one; a binary named by configure() is used or nothing is.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { loadModel } from '../../dist/index.js';
import { loadTinyModel, releaseTinyModel, root } from '../helpers.js';

const run = promisify(execFile);
let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

test('threads beyond the CPUs this process may use are capped, and stats say how many run', async () => {
  const cpus = availableParallelism();
  const session = model.createSession({ threads: 1000 });
  assert.equal(session.stats.threads, cpus);
  const answer = await session.ask('Hi', { temperature: 0, maxTokens: 2 });
  assert.equal(typeof answer, 'string');
  assert.equal(session.stats.generatedTokens, 2);
  await session.dispose();
  const one = model.createSession({ threads: 1 });
  assert.equal(one.stats.threads, 1);
  await one.dispose();
  const big = await loadModel({ model: fx.model, threads: 1000 });
  const s = big.createSession({ template: 'none' });
  assert.equal(s.stats.threads, cpus);
  await big.dispose();
  await assert.rejects(async () => model.createSession({ threads: 0 }), { code: 'ERR_INVALID_ARGUMENT' });
});

test('model, projector and image paths may be file: URLs, as strings or URL objects; other URLs are refused', async () => {
  const byUrl = await loadModel({ model: pathToFileURL(fx.model), projector: pathToFileURL(fx.projector).href, threads: 1 });
  const a = await byUrl.encodeImage(pathToFileURL(fx.images.png));
  const b = await byUrl.encodeImage(pathToFileURL(fx.images.png).href);
  const c = await byUrl.encodeImage(fx.images.png);
  assert.deepEqual(a.toFloat32Array(), c.toFloat32Array());
  assert.deepEqual(b.toFloat32Array(), c.toFloat32Array());
  const session = byUrl.createSession();
  assert.equal(typeof (await session.ask([pathToFileURL(fx.images.png), 'What is it?'], { temperature: 0, maxTokens: 2 })), 'string');
  await byUrl.dispose();
  // http(s) URLs are downloads now (issue 16): with download: false, only the cache is looked at.
  for (const model of ['https://example.com/model.gguf', new URL('http://127.0.0.1/x.gguf')]) {
    await assert.rejects(loadModel({ model, download: false }), { code: 'ERR_DOWNLOAD' });
  }
  for (const model of ['file://remote-host/x.gguf', 'ftp://example.com/x.gguf']) {
    await assert.rejects(loadModel({ model }), (err) => {
      assert.equal(err.code, 'ERR_INVALID_ARGUMENT');
      assert.match(err.message, /model/);
      return true;
    });
  }
  await assert.rejects(model.encodeImage(new URL('https://example.com/cat.png')), { code: 'ERR_INVALID_ARGUMENT' });
});

test('stop is one string or an array of strings; an empty stop string is refused', async () => {
  const session = model.createSession({ template: 'none' });
  const full = await session.ask('Hello', { temperature: 0, maxTokens: 12 });
  await session.reset();
  const cut = full.trim().slice(0, 2);
  assert.ok(cut.length > 0, `answer ${JSON.stringify(full)}`);
  const one = await session.ask('Hello', { temperature: 0, maxTokens: 12, stop: cut });
  await session.reset();
  const many = await session.ask('Hello', { temperature: 0, maxTokens: 12, stop: [cut] });
  await session.reset();
  assert.equal(one, many);
  assert.equal(one, full.slice(0, full.indexOf(cut)));
  for (const stop of [[''], '', ['ok', ''], [1], 5]) {
    await assert.rejects(session.ask('Hello', { maxTokens: 2, stop }), (err) => {
      assert.equal(err.code, 'ERR_INVALID_ARGUMENT');
      assert.match(err.message, /stop/);
      return true;
    }, JSON.stringify(stop));
  }
  await session.dispose();
});

test('configure({ binaryPath }) naming a missing file fails with ERR_NO_BINARY instead of loading another binary', async () => {
  const probe = `
    import { configure, getSystemInfo } from ${JSON.stringify(pathToFileURL(`${root}/dist/index.js`).href)};
    configure({ binaryPath: '/nonexistent/minigpt.node' });
    try { getSystemInfo(); console.log('loaded'); } catch (err) { console.log(err.code + ' ' + err.message.split('\\n').length); }
  `;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', probe]);
  assert.match(stdout, /^ERR_NO_BINARY /);
  const env = { ...process.env, MINIGPT_NODE_BINARY: '/nonexistent/minigpt.node' };
  const plain = `import { getSystemInfo } from ${JSON.stringify(pathToFileURL(`${root}/dist/index.js`).href)};
    try { getSystemInfo(); console.log('loaded'); } catch (err) { console.log(err.code); }`;
  const fromEnv = await run(process.execPath, ['--input-type=module', '-e', plain], { env });
  assert.equal(fromEnv.stdout.trim(), 'ERR_NO_BINARY');
});
