// Models by name (issue 16) against a local stand-in for the hub (tools/fixtures/fake-hub.js,
// 127.0.0.1 only): pulls, resume with Range after a dropped connection or an abort, sha256
// verification, the token kept from the CDN, offline use, the lock between processes, and the
// messages of 401/403/404. Nothing here reaches the internet.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { listModels, loadModel, planModel, pullModel, removeModel } from '../../dist/index.js';
import { fileDigest, startFakeHub } from '../../tools/fixtures/fake-hub.js';
import { makeFixtures, root } from '../helpers.js';

const run = promisify(execFile);
const COMMIT = 'a'.repeat(40);
const REPO = 'test-org/tiny-GGUF';
let fx, hub, work;
let n = 0;
/** A fresh cache per test, so that no test depends on another's downloads. */
const newCache = () => join(work, `cache-${++n}`);
const gets = (server) => hub.log.filter((r) => r.server === server && r.method === 'GET');

before(async () => {
  fx = await makeFixtures();
  work = await mkdtemp(join(tmpdir(), 'minigpt-models-'));
  hub = await startFakeHub({
    treePageSize: 3,  // several pages, as the hub's tree API pages its answers
    repos: {
      [REPO]: {
        commit: COMMIT,
        files: {
          'README.md': { text: '# tiny\n' },
          'tiny-Q4_K_M.gguf': fx.model,
          'tiny-Q8_0.gguf': fx.model,
          'mmproj-tiny-f16.gguf': fx.projector,
          'mmproj-tiny-Q8_0.gguf': fx.projector,
          'sub/mmproj-tiny-Q4_0.gguf': fx.projector,
        },
      },
      'gated-org/secret-GGUF': { commit: 'b'.repeat(40), gated: 'hf_secret', files: { 'secret-Q4_K_M.gguf': fx.model } },
    },
  });
});

after(async () => {
  await hub?.close();
  await fx?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

const opts = (extra = {}) => ({ endpoint: hub.endpoint, cacheDir: newCache(), token: '', ...extra });

test('pull: an hf: file lands in the documented layout, verified, and a second pull downloads nothing', async () => {
  const o = opts();
  const progress = [];
  const r = await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` }, { ...o, onProgress: (p) => progress.push(p) });
  const want = await fileDigest(fx.model);
  assert.equal(r.model.path, join(o.cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'tiny-Q4_K_M.gguf'));
  assert.deepEqual({ uri: r.model.uri, size: r.model.size, sha256: r.model.sha256, cached: r.model.cached },
    { uri: `hf:${REPO}/tiny-Q4_K_M.gguf#main`, size: want.size, sha256: want.sha256, cached: true });
  assert.deepEqual(await fileDigest(r.model.path), want);
  const meta = JSON.parse(await readFile(`${r.model.path}.meta.json`, 'utf8'));
  assert.equal(meta.sha256, want.sha256);
  assert.equal(meta.commit, COMMIT);
  assert.ok(!existsSync(`${r.model.path}.part`) && !existsSync(`${r.model.path}.lock`));
  const last = progress.at(-1);
  assert.equal(last.receivedBytes, want.size);
  assert.equal(last.totalBytes, want.size);
  assert.ok(last.bytesPerSecond >= 0);
  const before = gets('cdn').length;
  const again = await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` }, o);
  assert.equal(again.model.path, r.model.path);
  assert.equal(gets('cdn').length, before, 'cached: only a HEAD to the hub');
  // A commit pins the content: once cached, no request at all.
  const pinned = await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf#${COMMIT}` }, o);
  const count = hub.log.length;
  await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf#${COMMIT}` }, o);
  assert.equal(hub.log.length, count);
  assert.ok(pinned.model.path.includes(COMMIT));
});

test('hf:owner/repo:quant picks the model and the mmproj as llama-server -hf, and planModel tells it offline afterwards', async () => {
  const o = opts();
  const planned = await planModel({ model: `hf:${REPO}:Q4_K_M` }, o);
  assert.equal(planned.model.cached, false);
  assert.equal(planned.projector, undefined, 'no listing yet: nothing is known without a request');
  const r = await pullModel({ model: `hf:${REPO}:Q4_K_M` }, o);
  assert.match(r.model.path, /tiny-Q4_K_M\.gguf$/);
  assert.match(r.projector.path, /[/\\]main[/\\]mmproj-tiny-Q8_0\.gguf$/, 'closest bits to Q4 in the same directory');
  const tree = hub.log.filter((l) => l.url.includes('/api/models/'));
  assert.ok(tree.length >= 2 && tree.some((l) => l.url.includes('cursor=')), 'follows the listing pages');
  const q8 = await pullModel({ model: `hf:${REPO}:Q8_0` }, o);
  assert.match(q8.model.path, /tiny-Q8_0\.gguf$/);
  const offline = await planModel({ model: `hf:${REPO}:Q4_K_M` }, { ...o, offline: true });
  assert.deepEqual(offline, r);
  await assert.rejects(pullModel({ model: `hf:${REPO}:Q2_K` }, o), (err) => {
    assert.equal(err.code, 'ERR_INVALID_ARGUMENT');
    assert.match(err.message, /Q2_K.*tiny-Q4_K_M\.gguf/s);
    return true;
  });
});

test('loadModel({ model: "hf:..." }) downloads, then answers like the same files loaded by path', async () => {
  const cacheDir = newCache();
  const byName = await loadModel({ model: `hf:${REPO}:Q4_K_M`, threads: 1, download: { endpoint: hub.endpoint, cacheDir, token: '' } });
  const byPath = await loadModel({ model: fx.model, projector: fx.projector, threads: 1 });
  try {
    assert.equal(byName.info.modelPath, join(cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'tiny-Q4_K_M.gguf'));
    assert.equal(byName.info.projectorPath, join(cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'mmproj-tiny-Q8_0.gguf'));
    assert.equal(byName.info.hasVision, true);
    assert.equal(byPath.info.modelPath, fx.model);
    const a = await byName.createSession().ask([fx.images.png, 'What is it?'], { temperature: 0, maxTokens: 6 });
    const b = await byPath.createSession().ask([fx.images.png, 'What is it?'], { temperature: 0, maxTokens: 6 });
    assert.equal(a, b);
  } finally {
    await byName.dispose();
    await byPath.dispose();
  }
  // download: false uses only the cache: what is there loads, what is not is a clear error.
  const cachedOnly = await loadModel({ model: `hf:${REPO}:Q4_K_M`, threads: 1, download: false, ...{} }).catch((e) => e);
  assert.equal(cachedOnly.code, 'ERR_DOWNLOAD', 'the default cache dir has nothing');
  const again = await loadModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf#main`, threads: 1, download: { cacheDir, offline: true } });
  await again.dispose();
});

test('a connection dropped halfway is resumed with Range; under 1.5x the bytes cross in all', async () => {
  const { size, sha256 } = await fileDigest(fx.model);
  const o = opts();
  const beforeGets = gets('cdn').length;
  const sentBefore = hub.bytesSent.cdn;
  Object.assign(hub.behaviour, { dropAfter: Math.floor(size / 2), dropTimes: 1 });
  try {
    const r = await pullModel({ model: `hf:${REPO}/tiny-Q8_0.gguf` }, o);
    assert.equal((await fileDigest(r.model.path)).sha256, sha256);
  } finally {
    Object.assign(hub.behaviour, { dropAfter: undefined, dropTimes: 0 });
  }
  const mine = gets('cdn').slice(beforeGets);
  assert.equal(mine.length, 2);
  assert.equal(mine[0].headers.range, undefined);
  assert.equal(mine[1].headers.range, `bytes=${Math.floor(size / 2)}-`);
  assert.ok(hub.bytesSent.cdn - sentBefore < 1.5 * size, `${hub.bytesSent.cdn - sentBefore} bytes for a ${size}-byte file`);
});

test('a server that ignores Range is answered by starting over; 5xx is retried, 4xx is not', async () => {
  const { size, sha256 } = await fileDigest(fx.projector);
  Object.assign(hub.behaviour, { dropAfter: Math.floor(size / 3), dropTimes: 1, ignoreRange: true });
  try {
    const r = await pullModel({ model: `hf:${REPO}/mmproj-tiny-f16.gguf` }, opts());
    assert.equal((await fileDigest(r.model.path)).sha256, sha256);
  } finally {
    Object.assign(hub.behaviour, { dropAfter: undefined, dropTimes: 0, ignoreRange: false });
  }
  hub.behaviour.failTimes = 2;
  const r = await pullModel({ model: `hf:${REPO}/mmproj-tiny-f16.gguf` }, opts());
  assert.equal(hub.behaviour.failTimes, 0);
  assert.equal((await fileDigest(r.model.path)).sha256, sha256);
  const count = hub.log.length;
  await assert.rejects(pullModel({ model: `hf:${REPO}/nope.gguf` }, opts()), { code: 'ERR_DOWNLOAD', status: 404 });
  assert.equal(hub.log.length, count + 1, 'one request for a 404');
});

test('a corrupted byte: ERR_DOWNLOAD naming both hashes, and nothing kept', async () => {
  const { sha256 } = await fileDigest(fx.model);
  const o = opts();
  hub.behaviour.corruptAt = 1000;
  let err;
  try {
    err = await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` }, o).catch((e) => e);
  } finally {
    hub.behaviour.corruptAt = undefined;
  }
  assert.equal(err.code, 'ERR_DOWNLOAD');
  assert.match(err.message, new RegExp(`expected ${sha256}, got [0-9a-f]{64}`));
  const path = join(o.cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'tiny-Q4_K_M.gguf');
  assert.ok(!existsSync(path) && !existsSync(`${path}.part`) && !existsSync(`${path}.meta.json`));
  assert.equal((await planModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` }, o)).model.cached, false);
});

test('the token goes to the endpoint, never to the CDN it redirects to; 401/403/404 say what to do', async () => {
  const saved = { ...process.env };
  try {
    const tokenFile = join(work, 'token');
    await writeFile(tokenFile, 'hf_secret\n');
    delete process.env.HF_TOKEN;
    process.env.HF_TOKEN_PATH = tokenFile;
    const from = hub.log.length;
    const r = await pullModel({ model: 'hf:gated-org/secret-GGUF/secret-Q4_K_M.gguf' }, { endpoint: hub.endpoint, cacheDir: newCache() });
    assert.ok(r.model.cached);
    const mine = hub.log.slice(from);
    assert.ok(mine.filter((l) => l.server === 'hub').every((l) => l.headers.authorization === 'Bearer hf_secret'));
    assert.ok(mine.some((l) => l.server === 'cdn'));
    assert.ok(mine.filter((l) => l.server === 'cdn').every((l) => l.headers.authorization === undefined));
  } finally {
    process.env = saved;
  }
  const gated = await pullModel({ model: 'hf:gated-org/secret-GGUF/secret-Q4_K_M.gguf' }, opts()).catch((e) => e);
  assert.equal(gated.code, 'ERR_DOWNLOAD');
  assert.equal(gated.status, 401);
  assert.match(gated.message, /HF_TOKEN/);
  assert.ok(gated.message.includes(`${hub.endpoint}/gated-org/secret-GGUF`), gated.message);
  const refused = await pullModel({ model: 'hf:gated-org/secret-GGUF/secret-Q4_K_M.gguf' }, opts({ token: 'hf_wrong' })).catch((e) => e);
  assert.equal(refused.status, 403);
  assert.match(refused.message, /refused.*licence/s);
  const missing = await pullModel({ model: `hf:${REPO}/missing.gguf` }, opts()).catch((e) => e);
  assert.equal(missing.status, 404);
  assert.match(missing.message, /missing\.gguf is not in repo test-org\/tiny-GGUF/);
  const noRepo = await pullModel({ model: 'hf:nobody/nothing/x.gguf' }, opts()).catch((e) => e);
  assert.equal(noRepo.status, 401);
  assert.match(noRepo.message, /nobody\/nothing.*does not exist/s);
  assert.ok(!missing.message.includes('secret-signature') && !missing.url.includes('?X-Amz'));
});

test('offline: the cache is used with the hub stopped, and an uncached file is named', async () => {
  // A second hub of its own, stopped halfway through this test.
  const local = await startFakeHub({ repos: { [REPO]: { commit: COMMIT, files: { 'tiny-Q4_K_M.gguf': fx.model, 'mmproj-tiny-Q8_0.gguf': fx.projector } } } });
  const cacheDir = newCache();
  const saved = { ...process.env };
  try {
    const pulled = await pullModel({ model: `hf:${REPO}:Q4_K_M` }, { endpoint: local.endpoint, cacheDir, token: '' });
    await local.close();
    process.env.MINIGPT_OFFLINE = '1';
    process.env.HF_ENDPOINT = local.endpoint;
    process.env.MINIGPT_MODELS_DIR = cacheDir;
    assert.deepEqual(await pullModel({ model: `hf:${REPO}:Q4_K_M` }), pulled);
    const model = await loadModel({ model: `hf:${REPO}:Q4_K_M`, threads: 1 });
    assert.equal(model.info.projectorPath, pulled.projector.path);
    await model.dispose();
    const err = await pullModel({ model: `hf:${REPO}/tiny-Q8_0.gguf` }).catch((e) => e);
    assert.equal(err.code, 'ERR_DOWNLOAD');
    assert.match(err.message, /MINIGPT_OFFLINE=1/);
    assert.ok(err.message.includes(`hf:${REPO}/tiny-Q8_0.gguf#main`), err.message);
    // Not offline, hub unreachable: a cached hf: file is still used (no retries needed).
    delete process.env.MINIGPT_OFFLINE;
    const t0 = Date.now();
    assert.equal((await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` })).model.path, pulled.model.path);
    assert.ok(Date.now() - t0 < 2000);
  } finally {
    process.env = saved;
    await local.close().catch(() => {});
  }
});

test('two processes pulling one file: one downloads, the other waits for the lock and reuses it', async () => {
  const cacheDir = newCache();
  const before = gets('cdn').length;
  hub.behaviour.chunkDelayMs = 20;
  const script = `
    import { pullModel } from ${JSON.stringify(join(root, 'dist', 'index.js'))};
    const r = await pullModel({ model: ${JSON.stringify(`hf:${REPO}/tiny-Q4_K_M.gguf`)} }, { endpoint: ${JSON.stringify(hub.endpoint)}, cacheDir: ${JSON.stringify(cacheDir)}, token: '' });
    console.log(JSON.stringify(r.model));`;
  try {
    const child = () => run(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 });
    const [a, b] = await Promise.all([child(), child()]);
    const ra = JSON.parse(a.stdout);
    const rb = JSON.parse(b.stdout);
    assert.equal(ra.path, rb.path);
    assert.deepEqual(await fileDigest(ra.path), await fileDigest(fx.model));
  } finally {
    hub.behaviour.chunkDelayMs = 0;
  }
  assert.equal(gets('cdn').length - before, 1, 'one download for two pulls');
});

test('a stale lock of a dead process is taken over', async () => {
  const o = opts();
  const path = join(o.cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'tiny-Q8_0.gguf');
  await mkdir(join(path, '..'), { recursive: true });
  const dead = await run(process.execPath, ['-e', 'console.log(process.pid)']);
  await writeFile(`${path}.lock`, `${dead.stdout.trim()}\n${(await import('node:os')).hostname()}\nx\n`);
  const r = await pullModel({ model: `hf:${REPO}/tiny-Q8_0.gguf` }, o);
  assert.equal(r.model.path, path);
});

test('abort mid-download leaves a part that the next pull resumes with Range', async () => {
  const { size, sha256 } = await fileDigest(fx.model);
  const o = opts();
  const half = Math.floor(size / 2);
  const path = join(o.cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'tiny-Q4_K_M.gguf');
  hub.behaviour.stallAfter = half;
  const controller = new AbortController();
  const pending = pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` }, { ...o, signal: controller.signal });
  try {
    for (let i = 0; i < 500 && (await stat(`${path}.part`).catch(() => ({ size: 0 }))).size < half; i++) await new Promise((r) => setTimeout(r, 10));
    controller.abort();
    await assert.rejects(pending, { code: 'ERR_ABORTED' });
  } finally {
    hub.behaviour.stallAfter = undefined;
    hub.release();
  }
  assert.equal((await stat(`${path}.part`)).size, half);
  assert.ok(!existsSync(path) && !existsSync(`${path}.lock`));
  const before = gets('cdn').length;
  const r = await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` }, o);
  assert.equal((await fileDigest(r.model.path)).sha256, sha256);
  const resumed = gets('cdn').slice(before);
  assert.equal(resumed.length, 1);
  assert.equal(resumed[0].headers.range, `bytes=${half}-`);
});

test('a part started from another version of the file starts over', async () => {
  const o = opts();
  const path = join(o.cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'tiny-Q4_K_M.gguf');
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(`${path}.part`, Buffer.alloc(1000, 7));
  await writeFile(`${path}.part.json`, JSON.stringify({ uri: `hf:${REPO}/tiny-Q4_K_M.gguf#main`, url: 'x', sha256: 'c'.repeat(64) }));
  const before = gets('cdn').length;
  const r = await pullModel({ model: `hf:${REPO}/tiny-Q4_K_M.gguf` }, o);
  assert.equal(gets('cdn')[before].headers.range, undefined);
  assert.deepEqual(await fileDigest(r.model.path), await fileDigest(fx.model));
});

test('a full disk (ENOSPC) rejects with ERR_DOWNLOAD and leaves no file', { skip: !existsSync('/dev/full') && 'needs /dev/full' }, async () => {
  const o = opts();
  const path = join(o.cacheDir, 'hf', 'test-org', 'tiny-GGUF', 'main', 'tiny-Q8_0.gguf');
  await mkdir(join(path, '..'), { recursive: true });
  // Writes to the part go to /dev/full, which fails every write with ENOSPC.
  await symlink('/dev/full', `${path}.part`);
  const err = await pullModel({ model: `hf:${REPO}/tiny-Q8_0.gguf` }, o).catch((e) => e);
  assert.equal(err.code, 'ERR_DOWNLOAD');
  assert.match(err.message, /Disk full/);
  assert.ok(!existsSync(path) && !existsSync(`${path}.meta.json`));
});

test('https URLs (with #sha256=) and catalog names; listModels and removeModel', async () => {
  const { sha256 } = await fileDigest(fx.model);
  const o = opts();
  const url = hub.cdnUrl(REPO, 'tiny-Q4_K_M.gguf');
  const byUrl = await pullModel({ model: `${url}#sha256=${sha256}` }, o);
  assert.match(byUrl.model.path, /[/\\]url[/\\][0-9a-f]{64}[/\\][0-9a-f]{64}$/);
  assert.equal(byUrl.model.sha256, sha256);
  const wrong = await pullModel({ model: `${hub.cdnUrl(REPO, 'mmproj-tiny-f16.gguf')}#sha256=${sha256}` }, o).catch((e) => e);
  assert.equal(wrong.code, 'ERR_DOWNLOAD');
  assert.match(wrong.message, /sha256 mismatch/);

  const catalog = join(work, 'catalog.json');
  const proj = await fileDigest(fx.projector);
  await writeFile(catalog, JSON.stringify({
    default: 'tiny',
    models: {
      tiny: {
        description: 'test', license: 'MIT', sources: ['test'],
        model: { uri: `hf:${REPO}/tiny-Q4_K_M.gguf#${COMMIT}`, size: (await fileDigest(fx.model)).size, sha256 },
        projector: { uri: `hf:${REPO}/mmproj-tiny-f16.gguf#${COMMIT}`, size: proj.size, sha256: proj.sha256 },
      },
      later: { placeholder: true, description: 'soon', license: '?', sources: [] },
    },
  }));
  const saved = { ...process.env };
  try {
    process.env.MINIGPT_CATALOG = catalog;
    const planned = await planModel({ model: 'tiny' }, o);
    assert.equal(planned.catalogName, 'tiny');
    assert.equal(planned.model.cached, false);
    assert.equal(planned.model.sha256, sha256);
    const r = await pullModel({ model: 'tiny' }, o);
    assert.ok(r.model.cached && r.projector.cached);
    await assert.rejects(pullModel({ model: 'later' }, o), { code: 'ERR_INVALID_ARGUMENT', message: /placeholder/ });
    await assert.rejects(pullModel({ model: 'unknown-name' }, o), { code: 'ERR_INVALID_ARGUMENT', message: /tiny, later/ });
    const listed = await listModels({ cacheDir: o.cacheDir });
    assert.deepEqual(listed.catalog.map((e) => [e.name, !!e.default, !!e.placeholder]), [['tiny', true, false], ['later', false, true]]);
    assert.deepEqual(listed.cached.map((c) => c.uri).sort(), [`hf:${REPO}/mmproj-tiny-f16.gguf#${COMMIT}`, `hf:${REPO}/tiny-Q4_K_M.gguf#${COMMIT}`, url].sort());
    const removed = await removeModel('tiny', { cacheDir: o.cacheDir });
    assert.ok(removed.includes(r.model.path) && removed.includes(r.projector.path));
    assert.ok(!existsSync(r.model.path));
    assert.equal((await listModels({ cacheDir: o.cacheDir })).cached.length, 1);
    await assert.rejects(removeModel(fx.model, { cacheDir: o.cacheDir }), { code: 'ERR_INVALID_ARGUMENT' });
    assert.ok(existsSync(fx.model));
  } finally {
    process.env = saved;
  }
});
