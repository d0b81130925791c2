// Catalog recipes (issue 17): `pull minigpt4-7b` on a test catalog whose checkpoints are tiny
// stand-ins (a LAVIS EVA ViT + Q-Former + MiniGPT-4 projection, a sharded HF LLaMA folder with
// a SentencePiece tokenizer trained here) served by a stand-in hub on 127.0.0.1: downloaded,
// converted, quantized, loaded by name and asked; a process killed during a download or
// between steps resumes without fetching again; local checkpoints replace the downloads; a
// checkpoint that must be brought is asked for by name.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel, planModel, pullModel } from '../../dist/index.js';
import { tinyBlip2, writeTorchZip } from '../../tools/fixtures/checkpoints.js';
import { startCliHub } from '../fixtures/cli-hub.js';
import { sentencePieceMissing, trainTokenizer, writeLlamaHf } from '../../tools/fixtures/llama-hf.js';
import { collect, root, testPixels } from '../helpers.js';

const NO_SPM = sentencePieceMissing();
const cliPath = join(root, 'dist', 'cli', 'index.js');
const childPath = join(root, 'test', 'native', 'recipe-child.js');
const REPO = 'test-org/vicuna-tiny';
const LAVIS = 'lavis/blip2';
const PROJ = 'prerained_minigpt4_7b.pth';

let work, hub, catalog, llmDir, ckptDir, shardNames;

before(async () => {
  if (NO_SPM) return;
  work = await mkdtemp(join(tmpdir(), 'minigpt-recipe-'));
  const spm = await trainTokenizer(join(work, 'spm'));
  // The user's own copies: the LLM folder and the three encoder checkpoints side by side.
  ckptDir = join(work, 'mine');
  llmDir = join(ckptDir, 'vicuna-7b');
  await writeLlamaHf(llmDir, { tokenizer: spm, heads: 4, kvHeads: 2, embd: 64, ff: 96, blocks: 2, shards: 2, seed: 5 });
  const l = tinyBlip2('lavis', { sizes: { E: 88, H: 64, D: 64 } });
  await writeTorchZip(join(ckptDir, 'eva_vit_g.pth'), l.eva);
  await writeTorchZip(join(ckptDir, 'blip2_pretrained_flant5xxl.pth'), l.blip2, { nested: true });
  await writeTorchZip(join(ckptDir, PROJ), l.minigpt4, { nested: true });
  shardNames = (await readdir(llmDir)).filter((f) => f.endsWith('.safetensors') || f.endsWith('.json') || f === 'tokenizer.model');
  hub = await startCliHub({
    ...Object.fromEntries(shardNames.map((f) => [`${REPO}/${f}`, join(llmDir, f)])),
    [`${REPO}/README.md`]: join(llmDir, 'config.json'),  // not fetched: the recipe takes only what the converter reads
    [`${LAVIS}/eva_vit_g.pth`]: join(ckptDir, 'eva_vit_g.pth'),
    [`${LAVIS}/blip2_pretrained_flant5xxl.pth`]: join(ckptDir, 'blip2_pretrained_flant5xxl.pth'),
  });
  // Shaped like the shipped entry: two encoder files by URL, the projection brought by the user.
  const url = (f) => `${hub.endpoint}/${LAVIS}/resolve/main/${f}`;
  catalog = join(work, 'catalog.json');
  await writeFile(catalog, JSON.stringify({
    models: {
      'minigpt4-7b': {
        description: 'A tiny stand-in for MiniGPT-4 (Vicuna v0 7B).', license: 'MIT', sources: ['test'],
        recipe: {
          encoder: [{ uri: url('eva_vit_g.pth'), ...hub.file(`${LAVIS}/eva_vit_g.pth`) }, { uri: url('blip2_pretrained_flant5xxl.pth') }, { name: PROJ, get: 'https://drive.example/minigpt4-7b' }],
          llm: { uri: `hf:${REPO}#main` },
          template: 'minigpt4-v0', type: 'Q4_K_M', encoderType: 'q8_0',
        },
      },
    },
  }));
  process.env.MINIGPT_CATALOG = catalog;
  process.env.HF_TOKEN = '';
  delete process.env.MINIGPT_OFFLINE;
});
after(async () => {
  await hub?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

const newCache = () => mkdtemp(join(work, 'cache-'));
const opts = (cacheDir, more = {}) => ({ cacheDir, endpoint: hub.endpoint, ...more });
const downloads = () => hub.requests.filter((r) => r.method === 'GET' && r.url.includes('/resolve/'));
const buildDir = (cacheDir) => join(cacheDir, 'recipes', 'minigpt4-7b', 'Q4_K_M-q8_0');

/** Runs recipe-child.js; resolves { status, signal, steps }. */
function child(cacheDir, { killAt, from = [join(ckptDir, PROJ)] } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [childPath, JSON.stringify({ name: 'minigpt4-7b', options: opts(cacheDir, { from }), killAt })], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MINIGPT_CATALOG: catalog },
    });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (status, signal) => resolve({ status, signal, err, steps: out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) }));
  });
}

async function askOnce(model) {
  const session = model.createSession();
  const image = await model.encodeImage(testPixels());
  const r = await collect(session.stream([image, 'What is this?'], { temperature: 0, maxTokens: 6 }));
  await session.dispose();
  return r;
}

test('pull minigpt4-7b: downloads, converts, quantizes, cleans up; the name then loads the pair and answers', { skip: NO_SPM }, async () => {
  const cacheDir = await newCache();
  hub.requests.length = 0;
  // Before the build, the name says how to get it rather than failing on a missing file.
  await assert.rejects(loadModel({ model: 'minigpt4-7b', download: opts(cacheDir) }), (e) => e.code === 'ERR_DOWNLOAD' && /npx minigpt pull minigpt4-7b/.test(e.message));
  const steps = [];
  const resolved = await pullModel({ model: 'minigpt4-7b' }, opts(cacheDir, { from: join(ckptDir, PROJ), onStep: (e) => steps.push(`${e.step}:${e.state}`) }));
  assert.deepEqual(steps, ['download:start', 'download:done', 'encoder:start', 'encoder:done', 'llm:start', 'llm:done', 'quantize:start', 'quantize:done', 'cleanup:start', 'cleanup:done']);
  const dir = buildDir(cacheDir);
  assert.equal(resolved.catalogName, 'minigpt4-7b');
  assert.equal(resolved.model.path, join(dir, 'model-Q4_K_M.gguf'));
  assert.equal(resolved.projector.path, join(dir, 'mmproj-q8_0.gguf'));
  // Fetched: the two encoder files and the LLM's files (not README.md, not the user's projection).
  const fetched = downloads().map((r) => r.url.replace(/^.*\/resolve\/[^/]+\//, '')).sort();
  assert.deepEqual(fetched, ['blip2_pretrained_flant5xxl.pth', 'eva_vit_g.pth', ...shardNames].sort());
  // Intermediates gone: the f16 GGUF and the downloaded checkpoints; the user's file stays.
  assert.deepEqual((await readdir(dir)).sort(), ['mmproj-q8_0.gguf', 'model-Q4_K_M.gguf', 'state.json']);
  assert.ok(!existsSync(join(cacheDir, 'hf', 'test-org', 'vicuna-tiny', 'main', 'model-00001-of-00002.safetensors')));
  assert.ok(existsSync(join(ckptDir, PROJ)));

  const plan = await planModel({ model: 'minigpt4-7b' }, { cacheDir });
  assert.equal(plan.model.cached, true);
  assert.equal(plan.model.path, resolved.model.path);

  // By name: no request, the pair built above, the MiniGPT-4 v0 prompt format, a greedy answer.
  hub.requests.length = 0;
  const model = await loadModel({ model: 'minigpt4-7b', threads: 2, download: opts(cacheDir) });
  try {
    assert.equal(model.info.projectorType, 'blip2');
    assert.equal(model.info.promptTemplate, 'minigpt4-v0');
    const a = await askOnce(model);
    assert.ok(a.tokens.length > 0);
    assert.deepEqual((await askOnce(model)).tokens, a.tokens, 'greedy is repeatable');
  } finally {
    await model.dispose();
  }
  assert.equal(hub.requests.length, 0);

  // A second pull is a no-op: every step skipped, nothing fetched.
  const again = [];
  await pullModel({ model: 'minigpt4-7b' }, opts(cacheDir, { onStep: (e) => again.push(e.state) }));
  assert.ok(again.every((s) => s === 'skipped'), again.join());
  assert.equal(hub.requests.length, 0);

  // The command line by name: describe answers with the built pair.
  const png = join(work, 'photo.png');
  const { default: sharp } = await import('sharp');
  await sharp(testPixels().data, { raw: { width: 40, height: 30, channels: 3 } }).png().toFile(png);
  const r = await cli(cacheDir, ['describe', png, '--model', 'minigpt4-7b', '--max-tokens', '4', '--temperature', '0', '--threads', '2']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.length > 0);
});

test('killed while downloading, and again between steps: each rerun continues where it stopped and fetches nothing twice', { skip: NO_SPM }, async () => {
  const cacheDir = await newCache();
  hub.requests.length = 0;
  // 1. The CLI, its second shard's download stalled half way: killed with SIGKILL.
  const shard = shardNames.find((f) => f.startsWith('model-00002'));
  hub.stall(`${REPO}/${shard}`, true);
  // Killed once the part file holds bytes: one created but still empty would restart from 0.
  const partHasBytes = () => {
    try {
      return statSync(join(cacheDir, 'hf', 'test-org', 'vicuna-tiny', 'main', `${shard}.part`)).size > 0;
    } catch {
      return false;
    }
  };
  const killed = await cli(cacheDir, ['pull', 'minigpt4-7b', '--from', join(ckptDir, PROJ)], {
    onStderr: (_, p) => {
      if (partHasBytes() && !p.killed) p.kill('SIGKILL');
    },
    poll: (p) => partHasBytes() && p.kill('SIGKILL'),
  });
  assert.equal(killed.signal, 'SIGKILL', killed.stderr);
  hub.stall(`${REPO}/${shard}`, false);
  const hfDir = join(cacheDir, 'hf', 'test-org', 'vicuna-tiny', 'main');
  const urlFiles = await readdir(join(cacheDir, 'url'), { recursive: true }).catch(() => []);
  const completed = [...(await readdir(hfDir)), ...urlFiles].filter((f) => f.endsWith('.meta.json')).map((f) => f.replace(/^.*\//, '').replace(/\.meta\.json$/, ''));
  assert.ok(completed.includes('eva_vit_g.pth') && completed.length >= 3, `completed before the kill: ${completed}`);
  const first = downloads().map((r) => r.url);
  assert.ok(first.some((u) => u.endsWith(shard)));
  assert.ok(!existsSync(join(buildDir(cacheDir), 'state.json')) || !JSON.parse(await readFile(join(buildDir(cacheDir), 'state.json'), 'utf8')).done.includes('download'));

  // 2. Rerun, killed as the LLM conversion starts: the download finishes with one ranged GET
  // of the shard's rest; nothing complete is fetched again.
  hub.requests.length = 0;
  const second = await child(cacheDir, { killAt: 'llm' });
  assert.equal(second.signal, 'SIGKILL');
  const gets = downloads();
  const again = gets.map((r) => r.url.replace(/^.*\//, '')).filter((f) => completed.includes(f));
  assert.deepEqual(again, [], 'a file downloaded before the kill is not fetched again');
  assert.match(gets.find((r) => r.url.endsWith(shard))?.range ?? '', /^bytes=[1-9]\d*-$/, 'the interrupted shard resumed, not restarted');
  const state = JSON.parse(await readFile(join(buildDir(cacheDir), 'state.json'), 'utf8'));
  assert.deepEqual(state.done, ['download', 'encoder']);
  // A half-written output left by the kill (as a crash mid-write would) is not taken for done.
  await writeFile(join(buildDir(cacheDir), 'llm-f16.gguf.part'), 'half a file');

  // 3. Rerun to the end: no request at all, download and encoder skipped.
  hub.requests.length = 0;
  const third = await child(cacheDir);
  assert.equal(third.status, 0, third.err);
  assert.equal(hub.requests.length, 0, JSON.stringify(hub.requests));
  assert.deepEqual(third.steps.filter((s) => s.state).map((s) => `${s.step}:${s.state}`), [
    'download:skipped', 'encoder:skipped', 'llm:start', 'llm:done', 'quantize:start', 'quantize:done', 'cleanup:start', 'cleanup:done',
  ]);
  assert.deepEqual((await readdir(buildDir(cacheDir))).sort(), ['mmproj-q8_0.gguf', 'model-Q4_K_M.gguf', 'state.json']);
  const model = await loadModel({ model: 'minigpt4-7b', threads: 2, download: { cacheDir, offline: true } });
  try {
    assert.ok((await askOnce(model)).tokens.length > 0);
  } finally {
    await model.dispose();
  }
});

test('checkpoints on disk replace the downloads; --keep keeps the f16 GGUF; other types build beside', { skip: NO_SPM }, async () => {
  const cacheDir = await newCache();
  hub.requests.length = 0;
  const r = await cli(cacheDir, ['pull', 'minigpt4-7b', '--from', ckptDir, '--type', 'q8_0', '--encoder-type', 'f16', '--keep']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(hub.requests.length, 0, 'nothing downloaded');
  assert.match(r.stderr, /converting the image encoder/);
  const dir = join(cacheDir, 'recipes', 'minigpt4-7b', 'Q8_0-f16');
  assert.deepEqual((await readdir(dir)).sort(), ['llm-f16.gguf', 'mmproj-f16.gguf', 'model-Q8_0.gguf', 'state.json']);
  assert.match(r.stdout, /model-Q8_0\.gguf/);
  assert.ok(existsSync(join(llmDir, 'config.json')) && existsSync(join(ckptDir, 'eva_vit_g.pth')), 'the user\'s files are never removed');
  // The name now loads the build just made.
  const plan = await planModel({ model: 'minigpt4-7b' }, { cacheDir });
  assert.equal(plan.model.path, join(dir, 'model-Q8_0.gguf'));
  assert.equal(plan.projector.path, join(dir, 'mmproj-f16.gguf'));
});

test('a checkpoint the user must bring is asked for by name and source before any download; bad options are typed errors', { skip: NO_SPM }, async () => {
  const cacheDir = await newCache();
  hub.requests.length = 0;
  await assert.rejects(pullModel({ model: 'minigpt4-7b' }, opts(cacheDir)), (e) => {
    assert.equal(e.code, 'ERR_INVALID_ARGUMENT');
    assert.match(e.message, /prerained_minigpt4_7b\.pth/);
    assert.match(e.message, /drive\.example\/minigpt4-7b/);
    assert.match(e.message, /--from/);
    return true;
  });
  assert.equal(downloads().length, 0);
  await assert.rejects(pullModel({ model: 'minigpt4-7b' }, opts(cacheDir, { type: 'Q9_X' })), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(pullModel({ model: 'minigpt4-7b' }, opts(cacheDir, { encoderType: 'q3' })), /encoderType/);
  await assert.rejects(pullModel({ model: 'minigpt4-7b' }, opts(cacheDir, { from: join(work, 'nope') })), /does not exist/);
  await assert.rejects(pullModel({ model: join(ckptDir, PROJ) }, opts(cacheDir, { keep: true })), /only for catalog models built from checkpoints/);
  const r = await cli(cacheDir, ['pull', 'minigpt4-7b']);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /prerained_minigpt4_7b\.pth.*--from/);
});

/** The CLI against the stand-in hub and the test catalog; `poll(child)` runs every 20 ms. */
function cli(cacheDir, args, { onStderr, poll } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cliPath, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MINIGPT_MODELS_DIR: cacheDir, HF_ENDPOINT: hub.endpoint, MINIGPT_CATALOG: catalog, MINIGPT_OFFLINE: '', HF_TOKEN: '' },
    });
    let stdout = '';
    let stderr = '';
    const timer = poll ? setInterval(() => poll(p), 20) : undefined;
    p.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d;
      onStderr?.(stderr, p);
    });
    p.on('error', reject);
    p.on('close', (status, signal) => {
      clearInterval(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}
