// Bad files and misuse reject with typed errors and the process lives.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { writeTinyMmproj } from '../../tools/fixtures/models.js';
import { makeFixtures } from '../helpers.js';

let fx;
before(async () => {
  fx = await makeFixtures();
});
after(async () => {
  await fx?.cleanup();
});

const rejectsWith = (promise, code, pattern) =>
  assert.rejects(promise, (err) => {
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });

test('model files that cannot load', async () => {
  await rejectsWith(loadModel({ model: join(fx.dir, 'nope.gguf') }), 'ERR_MODEL_LOAD', /not found/);
  await rejectsWith(loadModel({ model: fx.dir }), 'ERR_MODEL_LOAD', /directory/);
  const empty = join(fx.dir, 'empty.gguf');
  await writeFile(empty, '');
  await rejectsWith(loadModel({ model: empty }), 'ERR_MODEL_LOAD');
  const bytes = await readFile(fx.model);
  for (const fraction of [0.05, 0.5, 0.99]) {
    const cut = join(fx.dir, `cut-${fraction}.gguf`);
    await writeFile(cut, bytes.subarray(0, Math.floor(bytes.length * fraction)));
    await rejectsWith(loadModel({ model: cut }), 'ERR_MODEL_LOAD');
  }
  const junk = join(fx.dir, 'junk.gguf');
  await writeFile(junk, 'definitely not a gguf file, just text');
  await rejectsWith(loadModel({ model: junk }), 'ERR_MODEL_LOAD', /GGUF/);
  await rejectsWith(loadModel({ model: fx.projector }), 'ERR_MODEL_LOAD', /projector/);
});

test('projectors that cannot load', async () => {
  await rejectsWith(loadModel({ model: fx.model, projector: fx.model }), 'ERR_PROJECTOR_LOAD', /text model/);
  await rejectsWith(loadModel({ model: fx.model, projector: join(fx.dir, 'nope.gguf') }), 'ERR_PROJECTOR_LOAD', /not found/);
  const wide = join(fx.dir, 'wide-mmproj.gguf');
  await writeTinyMmproj(wide, { nEmbdText: 128 });
  await rejectsWith(loadModel({ model: fx.model, projector: wide }), 'ERR_PROJECTOR_MISMATCH', /128.*64|64.*128/);
  // libmtmd segfaults on these; we must refuse them first.
  for (const omitTensor of ['v.patch_embd.weight', 'v.position_embd.weight', 'v.blk.0.attn_q.weight', 'mm.0.weight', 'mm.2.weight']) {
    const broken = join(fx.dir, `no-${omitTensor}.gguf`);
    await writeTinyMmproj(broken, { nEmbdText: 64, omitTensor });
    await rejectsWith(loadModel({ model: fx.model, projector: broken }), 'ERR_PROJECTOR_LOAD', new RegExp(omitTensor.replace(/\./g, '\\.')));
  }
});

test('loadModel options are validated', async () => {
  await rejectsWith(loadModel(), 'ERR_INVALID_ARGUMENT');
  await rejectsWith(loadModel({}), 'ERR_INVALID_ARGUMENT');
  await rejectsWith(loadModel({ model: fx.model, threads: 0 }), 'ERR_INVALID_ARGUMENT');
  await rejectsWith(loadModel({ model: fx.model, context_size: 10 }), 'ERR_INVALID_ARGUMENT', /contextSize/);
  await rejectsWith(loadModel({ model: fx.model, onProgress: 'no' }), 'ERR_INVALID_ARGUMENT');
  await rejectsWith(loadModel({ model: fx.model, gpuLayers: 'all' }), 'ERR_INVALID_ARGUMENT', /'auto' or 'max'/);
  // On a machine without a GPU backend, every choice still loads and runs on the CPU.
  for (const gpuLayers of ['auto', 'max', 0, 99]) await (await loadModel({ model: fx.model, gpuLayers })).dispose();
});

test('abort and a throwing onProgress stop a load', async () => {
  await rejectsWith(loadModel({ model: fx.model, signal: AbortSignal.abort() }), 'ERR_ABORTED');
  const boom = new Error('boom');
  await assert.rejects(
    loadModel({ model: fx.model, onProgress: () => { throw boom; } }),
    (err) => err.code === 'ERR_ABORTED' && err.cause === boom,
  );
});

test('progress is reported in (0, 1], increasing, ending at 1', async () => {
  const seen = [];
  const model = await loadModel({ model: fx.model, projector: fx.projector, onProgress: (p) => seen.push(p) });
  await new Promise((r) => setImmediate(r));
  assert.ok(seen.length >= 1);
  assert.equal(seen.at(-1), 1);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1]);
  assert.ok(seen.every((p) => p > 0 && p <= 1));
  await model.dispose();
});

test('use after dispose is ERR_DISPOSED; dispose is idempotent', async () => {
  const model = await loadModel({ model: fx.model, projector: fx.projector });
  const session = model.createSession();
  const image = await model.encodeImage(fx.images.png);
  await model.dispose();
  await model.dispose();
  assert.equal(model.disposed, true);
  assert.equal(session.disposed, true);
  assert.equal(image.disposed, true);
  assert.throws(() => model.info, { code: 'ERR_DISPOSED' });
  assert.throws(() => model.createSession(), { code: 'ERR_DISPOSED' });
  await rejectsWith(model.tokenize('x'), 'ERR_DISPOSED');
  await rejectsWith(model.encodeImage(fx.images.png), 'ERR_DISPOSED');
  await rejectsWith(session.ask('x'), 'ERR_DISPOSED');
});

test('model.info describes the model and projector', async () => {
  const model = await loadModel({ model: fx.model, projector: fx.projector });
  const info = model.info;
  assert.equal(info.architecture, 'llama');
  assert.equal(info.embeddingSize, 64);
  assert.equal(info.contextLength, 1024);
  assert.equal(info.hasVision, true);
  assert.equal(info.projectorType, 'mlp');
  assert.match(info.chatTemplate, /im_start/);
  assert.ok(info.parameters > 0 && info.vocabularySize > 256);
  await model.dispose();
});
