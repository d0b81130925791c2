// npm run test:gpu: the same work on a GPU backend and on the CPU. Run it with an addon that
// has a GPU backend: a local `npx minigpt build --gpu cuda|vulkan|metal`, or a prebuild plus the
// GPU package (MINIGPT_BACKENDS=/path/libggml-vulkan.so). It fails, rather than skips, when no
// GPU device is found: a GPU run that silently ran on the CPU proves nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { getDevices, getSystemInfo, loadModel } from '../../dist/index.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { collect, makeFixtures, oracleGreedy, oraclesBuilt } from '../helpers.js';

const N = 16;
let fx, blip2;

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

/** Smallest per-token cosine similarity between two [nTokens x nEmbd] embeddings. */
function minTokenCosine(a, b, nEmbd) {
  assert.equal(a.length, b.length);
  let worst = 1;
  for (let t = 0; t < a.length / nEmbd; t++) {
    worst = Math.min(worst, cosine(a.subarray(t * nEmbd, (t + 1) * nEmbd), b.subarray(t * nEmbd, (t + 1) * nEmbd)));
  }
  return worst;
}

async function embed(projector, gpuLayers) {
  const model = await loadModel({ model: fx.model, projector, gpuLayers, threads: 2 });
  try {
    const e = await model.encodeImage(fx.images.png);
    return { data: e.toFloat32Array(), nEmbd: e.nEmbd, gpuLayers: model.info.gpuLayers };
  } finally {
    await model.dispose();
  }
}

before(async () => {
  fx = await makeFixtures();
  blip2 = join(fx.dir, 'blip2.gguf');
  await writeTinyBlip2(blip2, { nEmbdText: 64, promptTemplate: 'minigpt4-v0' });
});
after(async () => { await fx?.cleanup(); });

test('a GPU device is present', () => {
  const gpus = getDevices().filter((d) => d.type === 'gpu' || d.type === 'igpu');
  const info = getSystemInfo();
  assert.ok(gpus.length > 0, `no GPU device; devices: ${JSON.stringify(info.devices)}; backend errors: ${info.backendErrors.join('; ')}`);
  console.log(`# GPU devices: ${gpus.map((d) => `${d.name} (${d.description}, ${Math.round(d.memoryFree / 2 ** 20)} MiB free)`).join(', ')}`);
});

test("gpuLayers 'max' and 'auto' put every layer on the GPU for a tiny model", async () => {
  for (const gpuLayers of ['max', 'auto']) {
    const model = await loadModel({ model: fx.model, gpuLayers });
    try {
      assert.equal(model.info.gpuLayers, 3, `${gpuLayers}: 2 layers and the output layer on the GPU`);
    } finally {
      await model.dispose();
    }
  }
});

test('greedy text on the GPU equals the CPU oracle', { skip: !oraclesBuilt && 'oracles not built' }, async () => {
  const model = await loadModel({ model: fx.model, gpuLayers: 'max', threads: 2 });
  try {
    for (const prompt of ['What is in this picture?', 'Describe the colours.']) {
      const session = model.createSession();
      const ours = await collect(session.stream(prompt, { temperature: 0, maxTokens: N }));
      const theirs = await oracleGreedy({ model: fx.model, prompt, n: N });
      assert.deepEqual(ours.tokens, theirs, prompt);
      await session.dispose();
    }
  } finally {
    await model.dispose();
  }
});

test('the mmproj projector on the GPU agrees with the CPU (cosine per token)', async () => {
  const cpu = await embed(fx.projector, 0);
  const gpu = await embed(fx.projector, 'max');
  assert.equal(cpu.gpuLayers, 0);
  assert.ok(gpu.gpuLayers > 0);
  const c = minTokenCosine(cpu.data, gpu.data, cpu.nEmbd);
  console.log(`# mmproj GPU vs CPU min token cosine ${c.toFixed(6)}`);
  assert.ok(c > 0.999, `cosine ${c}`);
});

test('the BLIP-2 projector on the GPU agrees with the CPU (cosine per token)', async () => {
  const cpu = await embed(blip2, 0);
  const gpu = await embed(blip2, 'max');
  const c = minTokenCosine(cpu.data, gpu.data, cpu.nEmbd);
  console.log(`# BLIP-2 GPU vs CPU min token cosine ${c.toFixed(6)}`);
  assert.ok(c > 0.999, `cosine ${c}`);
});
