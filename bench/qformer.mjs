#!/usr/bin/env node
// npm run bench:qformer: encode time and effective FLOP rate of our BLIP-2 projector (EVA
// ViT-g/14 + Q-Former, random weights of the real shape, f16 and q8_0) beside llama.cpp's own
// CLIP encoder (libmtmd) on a ViT-B/16-shaped mmproj, and the PyTorch reference, in one run.
// Models are written once into .cache/bench (git-ignored). Options: --threads N (2), --runs N (3).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getSystemInfo, loadModel } from '../dist/index.js';
import { writeTinyBlip2 } from '../tools/fixtures/blip2.js';
import { writeTinyLlama, writeTinyMmproj } from '../tools/fixtures/models.js';
import { torchEncode } from './torch-reference.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, '.cache', 'bench');
const { values } = parseArgs({ options: { threads: { type: 'string', default: '2' }, runs: { type: 'string', default: '3' }, 'no-torch': { type: 'boolean' } } });
const threads = Number(values.threads);
const runs = Number(values.runs);
mkdirSync(cache, { recursive: true });

// The real MiniGPT-4 encoder; the projection goes to a 64-wide stand-in LLM (its cost,
// 2 x 32 x 768 x 4096 = 0.2 GFLOP at 4096, is negligible beside the ViT's 520).
const EVA = { imageSize: 224, patchSize: 14, nEmbd: 1408, nLayer: 39, nHead: 16, nFf: 6144, qfHidden: 768, qfLayers: 12, qfHeads: 12, qfFf: 3072, nQuery: 32, crossFreq: 2, nEmbdText: 64 };
const VIT_B16 = { imageSize: 224, patchSize: 16, nEmbd: 768, nLayer: 12, nHead: 12, nFf: 3072, hidden: 4096, nEmbdText: 64 };

function blip2Flops(c) {
  const T = (c.imageSize / c.patchSize) ** 2 + 1, E = c.nEmbd, F = c.nFf, Q = c.nQuery, H = c.qfHidden, I = c.qfFf;
  const patch = 2 * (T - 1) * 3 * c.patchSize ** 2 * E;
  const block = 2 * T * E * 3 * E + 4 * T * T * E + 2 * T * E * E + 4 * T * E * F;
  let qf = 0;
  for (let i = 0; i < c.qfLayers; i++) {
    qf += 8 * Q * H * H + 4 * Q * Q * H + 4 * Q * H * I;
    if (i % c.crossFreq === 0) qf += 4 * Q * H * H + 4 * T * E * H + 4 * Q * T * H;
  }
  return patch + c.nLayer * block + qf + 2 * Q * H * c.nEmbdText;
}

function clipFlops(c) {
  const T = (c.imageSize / c.patchSize) ** 2 + 1, E = c.nEmbd, F = c.nFf;
  const block = 2 * T * E * 3 * E + 4 * T * T * E + 2 * T * E * E + 4 * T * E * F;
  // The LLaVA graph runs every block but the last; the mlp projector runs on the patch tokens.
  return 2 * (T - 1) * 3 * c.patchSize ** 2 * E + (c.nLayer - 1) * block + 2 * (T - 1) * (E * c.hidden + c.hidden * c.nEmbdText);
}

async function ensure(path, write) {
  if (!existsSync(path)) {
    process.stderr.write(`writing ${path} ...\n`);
    await write(path);
  }
  return path;
}

async function timeEncode(projector) {
  const model = await loadModel({ model: llm, projector, threads });
  const image = { data: new Uint8Array(224 * 224 * 3).map((_, i) => (i * 7) % 256), width: 224, height: 224, channels: 3 };
  await (await model.encodeImage(image)).dispose();  // warm-up
  const times = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    await (await model.encodeImage(image)).dispose();
    times.push(performance.now() - t0);
  }
  await model.dispose();
  times.sort((a, b) => a - b);
  return { min: times[0], median: times[Math.floor(times.length / 2)] };
}

async function torchReference() {
  if (values['no-torch']) return null;
  return torchEncode({ threads, runs: 1, outputLength: EVA.nEmbdText });
}

const llm = await ensure(join(cache, 'llm-64.gguf'), (p) => writeTinyLlama(p));
const files = {
  'minigpt-node BLIP-2 f16': await ensure(join(cache, 'eva-qformer-f16.gguf'), (p) => writeTinyBlip2(p, { ...EVA, type: 'f16' })),
  'minigpt-node BLIP-2 q8_0': await ensure(join(cache, 'eva-qformer-q8_0.gguf'), (p) => writeTinyBlip2(p, { ...EVA, type: 'q8_0' })),
  'llama.cpp CLIP ViT-B/16 f16': await ensure(join(cache, 'clip-vit-b16-f16.gguf'), (p) => writeTinyMmproj(p, { ...VIT_B16, type: 'f16' })),
};
const flops = { 'minigpt-node BLIP-2 f16': blip2Flops(EVA), 'minigpt-node BLIP-2 q8_0': blip2Flops(EVA), 'llama.cpp CLIP ViT-B/16 f16': clipFlops(VIT_B16) };

const rows = [];
for (const [name, file] of Object.entries(files)) {
  const t = await timeEncode(file);
  rows.push({ name, gflop: flops[name] / 1e9, ...t, rate: flops[name] / 1e9 / (t.min / 1000) });
}
const torch = await torchReference();
if (torch) rows.push({ name: 'PyTorch reference f32 (extrapolated in depth)', gflop: blip2Flops(EVA) / 1e9, min: torch.ms, median: torch.ms, rate: blip2Flops(EVA) / 1e9 / (torch.ms / 1000) });

const clipRate = rows.find((r) => r.name.startsWith('llama.cpp')).rate;
const header = `| encoder | GFLOP / image | min ms | median ms | GFLOP/s | rate vs llama.cpp CLIP |\n|---|---|---|---|---|---|`;
const table = rows.map((r) => `| ${r.name} | ${r.gflop.toFixed(1)} | ${r.min.toFixed(0)} | ${r.median.toFixed(0)} | ${r.rate.toFixed(1)} | ${(r.rate / clipRate).toFixed(2)}x |`).join('\n');
const cpu = cpus()[0]?.model ?? 'unknown CPU';
const report = `Threads: ${threads} of ${availableParallelism()} (${cpu}); runs: ${runs} after one warm-up; llama.cpp ${getSystemInfo().llamaCommit.slice(0, 7)}.\n\n${header}\n${table}\n`;
process.stdout.write(report);
const notes = `
Reading the table:
- GFLOP / image counts the matrix products of each encoder (${(blip2Flops(EVA) / 1e9).toFixed(0)} for EVA ViT-g/14 + Q-Former at 224px).
  "rate vs llama.cpp CLIP" compares FLOP rates, the fair measure between encoders of different size:
  the llama.cpp row is libmtmd's own CLIP graph (LLaVA-1.5 "mlp" layout, ViT-B/16 shape) timed through the same API.
- The BLIP-2 projection here goes to a 64-wide stand-in LLM; at 4096 wide it adds 0.2 GFLOP.
- PyTorch: Debian's python3-torch (generic BLAS), float32, timed at ViT depths 1 and 3 and extrapolated
  linearly to 39 (real-size float64 weights would need 8 GB). A record, not a speed anchor.
`;
if (process.env.BENCH_WRITE_DOCS) writeFileSync(join(root, 'docs', 'benchmarks-qformer.md'), `# BLIP-2 projector benchmark\n\nMade by \`BENCH_WRITE_DOCS=1 npm run bench:qformer\` (random weights of the real EVA ViT-g/14 + Q-Former shape).\n\n${report}${notes}`);
