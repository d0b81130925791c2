// gpuLayers: 'auto': the layer count fitted to the GPUs' free memory, checked against sums of
// the model's own tensor sizes (read back from a written GGUF) and the KV cache formula.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fitGpuLayers } from '../../dist/load-plan/gpu-fit.js';
import { readGgufHeader } from '../../dist/gguf/read.js';
import { writeTinyLlama, writeTinyMmproj } from '../../tools/fixtures/models.js';

const MIB = 1024 * 1024;
const CTX = 512;
let dir, model, projector, layerBytes, outputBytes, kvPerLayer, projectorBytes;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-fit-'));
  await writeTinyLlama(join(dir, 'llm.gguf'), { nLayer: 6, nEmbd: 256, nHead: 8, nHeadKv: 2, nFf: 640 });
  await writeTinyMmproj(join(dir, 'mmproj.gguf'), { nEmbdText: 256 });
  model = await readGgufHeader(join(dir, 'llm.gguf'));
  projector = await readGgufHeader(join(dir, 'mmproj.gguf'));
  layerBytes = model.tensors.filter((t) => t.name.startsWith('blk.0.')).reduce((s, t) => s + t.byteSize, 0);
  outputBytes = model.tensors.filter((t) => t.name.startsWith('output')).reduce((s, t) => s + t.byteSize, 0);
  kvPerLayer = CTX * 2 * (256 / 8) * 2 * 2;  // n_ctx x n_head_kv x (k + v head dims) x f16
  projectorBytes = projector.tensors.reduce((s, t) => s + t.byteSize, 0);
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

/** Free memory for which exactly `layers` layers (and the output when all) fit. */
function freeFor(layers, withOutput) {
  const need = projectorBytes + layers * (layerBytes + kvPerLayer) + (withOutput ? outputBytes : 0) + 512 * MIB;
  return Math.ceil(need / 0.95) + 1;
}

test('no GPU: everything stays on the CPU', () => {
  const r = fitGpuLayers({ model, projector, contextSize: CTX, devices: [{ type: 'cpu', memoryFree: 64 * 1024 * MIB }] });
  assert.equal(r.gpuLayers, 0);
});

test('plenty of GPU memory: every layer and the output layer (-1)', () => {
  const r = fitGpuLayers({ model, projector, contextSize: CTX, devices: [{ type: 'gpu', memoryFree: 24 * 1024 * MIB }] });
  assert.equal(r.gpuLayers, -1);
  assert.match(r.reason, /all 6 layers/);
});

test('memory for exactly k layers gives k', () => {
  for (const k of [0, 1, 3, 5]) {
    const r = fitGpuLayers({ model, projector, contextSize: CTX, devices: [{ type: 'gpu', memoryFree: freeFor(k, false) }] });
    assert.equal(r.gpuLayers, k, `free ${freeFor(k, false)} bytes`);
  }
  // all repeating layers but not the output layer: n_layer, not -1
  const r = fitGpuLayers({ model, projector, contextSize: CTX, devices: [{ type: 'gpu', memoryFree: freeFor(6, false) }] });
  assert.equal(r.gpuLayers, outputBytes > 0 ? 6 : -1);
  const all = fitGpuLayers({ model, projector, contextSize: CTX, devices: [{ type: 'gpu', memoryFree: freeFor(6, true) }] });
  assert.equal(all.gpuLayers, -1);
});

test('a longer context leaves room for fewer layers; two GPUs pool their memory', () => {
  const free = freeFor(4, false);
  const short = fitGpuLayers({ model, projector, contextSize: CTX, devices: [{ type: 'gpu', memoryFree: free }] }).gpuLayers;
  const long = fitGpuLayers({ model, projector, contextSize: CTX * 64, devices: [{ type: 'gpu', memoryFree: free }] }).gpuLayers;
  assert.equal(short, 4);
  assert.ok(long < short, `${long} < ${short}`);
  const split = fitGpuLayers({
    model, projector, contextSize: CTX,
    devices: [{ type: 'gpu', memoryFree: free / 2 }, { type: 'igpu', memoryFree: free / 2 }],
  });
  assert.equal(split.gpuLayers, 4);
});

test('the projector counts against the budget', () => {
  const free = freeFor(2, false);
  const withProjector = fitGpuLayers({ model, projector, contextSize: CTX, devices: [{ type: 'gpu', memoryFree: free }] }).gpuLayers;
  const without = fitGpuLayers({ model, contextSize: CTX, devices: [{ type: 'gpu', memoryFree: free }] }).gpuLayers;
  assert.equal(withProjector, 2);
  assert.ok(without >= withProjector);
});
