#!/usr/bin/env node
// npm run bench: the same work through minigpt-node, llama.cpp's own tools built from the same
// source, @fugood/llama.node and node-llama-cpp (and, for the BLIP-2 projector, the PyTorch
// reference), each contender in a child process of its own, printed as ratios to ours.
//
//   npm run bench -- [--runs 5] [--threads 2] [--only ours,llama-bench,...] [--quants Q4_0,Q8_0] [--workloads text,image]
//                    [--growth-runs 1] [--no-growth] [--no-load] [--no-blip2] [--write-docs]
//                    [--prompt-tokens 128] [--gen-tokens 64]   (smaller for a quick check of the harness)
//                    [--from-json FILE]   (re-print / re-write docs from a saved run)  [--help]
// BENCH_WRITE_DOCS=1 also writes docs/benchmarks.md and docs/benchmarks.svg. Every run is saved
// to .cache/bench/last-run.json.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { getSystemInfo } from '../dist/index.js';
import { llamaBuffers } from './llama-log.mjs';
import { loadTimes } from './load-time.mjs';
import { cacheDir, ensureModels, root } from './models.mjs';
import { render } from './report.mjs';
import { runNode } from './spawn.mjs';
import { DEFAULTS } from './workload.mjs';
import * as llamaBench from './contenders/llama-bench.mjs';
import * as mtmdCli from './contenders/mtmd-cli.mjs';
import { torchEncode } from './torch-reference.mjs';

const CONTENDERS = ['ours', 'ours-prebuild', 'llama-bench', 'mtmd-cli', 'fugood', 'node-llama-cpp', 'torch'];
// @fugood/llama.node takes a minute or more per image run and is 3-10x behind, the PyTorch
// reference 50x: 3 runs settle that, and the rounds after them go to the close comparisons.
const PEER_RUNS = 3;
const OPTIONS = {
  runs: { type: 'string', default: String(DEFAULTS.runs) },
  threads: { type: 'string', default: String(DEFAULTS.threads) },
  only: { type: 'string', default: CONTENDERS.join(',') },
  quants: { type: 'string', default: 'Q4_0,Q8_0' },
  workloads: { type: 'string', default: 'text,image' },
  'growth-runs': { type: 'string', default: '1' },
  'prompt-tokens': { type: 'string', default: String(DEFAULTS.promptTokens) },
  'gen-tokens': { type: 'string', default: String(DEFAULTS.genTokens) },
  'no-growth': { type: 'boolean' },
  'no-load': { type: 'boolean' },
  'no-blip2': { type: 'boolean' },
  'write-docs': { type: 'boolean' },
  'from-json': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};
let values;
try {
  ({ values } = parseArgs({ options: OPTIONS }));
} catch (err) {
  process.stderr.write(`bench: ${err.message} (npm run bench -- --help lists the options)\n`);
  process.exit(2);
}
if (values.help) {
  // The usage is the comment at the top of this file.
  const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n').slice(1);
  const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
  process.stdout.write(header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
  process.exit(0);
}

const writeDocs = values['write-docs'] || Boolean(process.env.BENCH_WRITE_DOCS);
let results;
if (values['from-json']) {
  results = JSON.parse(readFileSync(values['from-json'], 'utf8'));
} else {
  results = await runAll();
  writeFileSync(join(cacheDir, 'last-run.json'), JSON.stringify(results, null, 1));
}
const out = render(results);
process.stdout.write(out.text);
if (writeDocs) {
  writeFileSync(join(root, 'docs', 'benchmarks.md'), out.markdown);
  writeFileSync(join(root, 'docs', 'benchmarks.svg'), out.svg);
  process.stderr.write('bench: wrote docs/benchmarks.md and docs/benchmarks.svg\n');
}

async function runAll() {
  const runs = Number(values.runs), threads = Number(values.threads), growthRuns = Number(values['growth-runs']);
  const only = new Set(values.only.split(',').map((s) => s.trim()).filter(Boolean));
  for (const name of only) if (!CONTENDERS.includes(name)) throw new Error(`unknown contender ${name}; known: ${CONTENDERS.join(', ')}`);
  const quants = values.quants.split(',').map((s) => s.trim());
  const workloads = new Set(values.workloads.split(',').map((s) => s.trim()));
  const blip2 = !values['no-blip2'] && (only.has('ours') || only.has('torch'));
  const models = await ensureModels({ quants, blip2, threads });
  const promptTokens = Number(values['prompt-tokens']), genTokens = Number(values['gen-tokens']);
  const base = { ...DEFAULTS, promptTokens, genTokens, runs, threads, pictures: models.pictures, images: 1 };
  const meta = {
    date: new Date().toISOString(), cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), memGiB: totalmem() / 2 ** 30,
    node: process.version, llamaCommit: getSystemInfo().llamaCommit, threads, runs, growthRuns, promptTokens, genTokens,
    peers: { fugood: pkgVersion('@fugood/llama.node'), nodeLlamaCpp: pkgVersion('node-llama-cpp') },
    loadAvgStart: loadavg(), loadAvgMax: loadavg()[0],
  };
  const cases = [];
  const note = (label) => {
    meta.loadAvgMax = Math.max(meta.loadAvgMax, loadavg()[0]);
    process.stderr.write(`bench: ${label} (load average ${loadavg()[0].toFixed(2)})\n`);
  };
  // One contender on one case; a failure is recorded and reported, and the run goes on.
  const measure = async (label, fn) => {
    note(label);
    try {
      const r = await fn();
      delete r.stderr;
      return r;
    } catch (err) {
      process.stderr.write(`bench: ${label} failed: ${err.message}\n`);
      return { error: err.message };
    }
  };
  const attempt = async (c, fn) => cases.push({ ...c, ...(await measure(`${c.group} ${c.contender}`, fn)) });
  const ours = (s) => runNode('ours.mjs', s, { env: { MINIGPT_LOG: 'info' } }).then((r) => ({ ...r, buffers: llamaBuffers(r.stderr) }));
  // What \`npm install\` gives a user: the prebuilt addon with ggml's CPU variants (the same set
  // node-llama-cpp ships), where the local build is compiled with -march=native (tuned generically)
  // like llama.cpp's tools here. Only when \`npm run prebuild\` has made one for this version.
  const prebuild = prebuildBinary();
  if (!prebuild) only.delete('ours-prebuild');
  const oursPrebuild = (s) => runNode('ours.mjs', s, { env: { MINIGPT_NODE_BINARY: prebuild } });

  // The contenders of one case take turns run by run, each run in a fresh child with its own
  // warm-up: the speed of a shared machine drifts by several percent over minutes, and this way a
  // drift falls on all of them alike instead of on whoever ran last. The order rotates from round
  // to round (A B C, B C A, ...), so nobody always runs first after the previous case.
  const interleaved = async (entries) => {
    const results = entries.map(() => []);
    for (let r = 0; r < runs; r++) {
      const order = entries.map((_, k) => (k + r) % entries.length);
      for (const i of order) {
        const e = entries[i];
        if (r >= (e.maxRuns ?? runs)) continue;
        const part = await measure(`${e.c.group} ${e.c.contender}, run ${r + 1} of ${runs}`, () => e.fn({ ...e.settings, runs: 1 }));
        for (const run of part.runs ?? []) run.round = r;  // the targets pair ours with each contender round by round
        results[i].push(part);
      }
    }
    entries.forEach((e, i) => cases.push({ ...e.c, ...mergeRuns(results[i]) }));
  };

  for (const quant of quants) {
    const model = models.llm[quant];
    const text = { ...base, model, workload: 'text' };
    const image = { ...base, model, projector: models.clip, workload: 'image' };
    const entry = (workload, contender, settings, fn, maxRuns) => (only.has(contender) && workloads.has(workload) ? [{ c: { group: `${quant} ${workload}`, quant, workload, contender }, settings, fn, maxRuns }] : []);
    await interleaved([
      ...entry('text', 'ours', text, ours),
      ...entry('text', 'ours-prebuild', text, oursPrebuild),
      ...entry('text', 'llama-bench', text, llamaBench.run),
      ...entry('text', 'node-llama-cpp', text, (s) => runNode('node-llama-cpp.mjs', s)),
      ...entry('text', 'fugood', text, (s) => runNode('fugood.mjs', s), PEER_RUNS),
    ]);
    await interleaved([
      ...entry('image', 'ours', image, ours),
      ...entry('image', 'mtmd-cli', image, mtmdCli.run),
      ...entry('image', 'fugood', image, (s) => runNode('fugood.mjs', s), PEER_RUNS),
    ]);
  }

  if (blip2) {
    const quant = quants[0];
    const group = `${quant} BLIP-2 image`;
    const image = { ...base, model: models.llm[quant], projector: models.blip2, workload: 'image' };
    // Our BLIP-2 projector does not log its buffers: its weights are the mapped file; its compute
    // buffer is not counted.
    const blip2Mib = statSync(models.blip2).size / 2 ** 20;
    const withProjector = (r) => (r.buffers ? { ...r, buffers: { ...r.buffers, weights: r.buffers.weights + blip2Mib, total: r.buffers.total + blip2Mib } } : r);
    if (only.has('ours')) await attempt({ group, quant, workload: 'blip2', contender: 'ours' }, () => ours(image).then(withProjector));
    if (only.has('torch')) {
      await attempt({ group, quant, workload: 'blip2', contender: 'torch' }, async () => {
        const t = await torchEncode({ threads, runs: Math.max(1, Math.min(runs, PEER_RUNS)), outputLength: 2048 });
        if (!t) throw new Error('python3 with torch is not available');
        return { runs: [{ encodeMs: t.ms }], extrapolated: t };
      });
    }
  }

  const growth = { prompt: [], images: [] };
  if (only.has('ours') && !values['no-growth']) {
    const quant = quants[0];
    const model = models.llm[quant];
    for (const promptTokens of [128, 512, 1024, 2048]) {
      const s = { ...base, model, workload: 'text', promptTokens, runs: growthRuns, ctx: 4096 };  // 2048 + 64 > the model's 2048
      const row = { promptTokens, quant, ours: await measure(`growth: ours, ${promptTokens}-token prompt`, () => ours(s)) };
      if (only.has('llama-bench')) row.llamaBench = await measure(`growth: llama-bench, ${promptTokens}-token prompt`, () => llamaBench.run(s));
      growth.prompt.push(row);
    }
    for (let images = 1; images <= 4; images++) {
      const s = { ...base, model, projector: models.clip, workload: 'image', images, runs: growthRuns };
      growth.images.push({ images, quant, ours: await measure(`growth: ours, ${images} image(s)`, () => ours(s)) });
    }
  }

  let load = null;
  if (only.has('ours') && !values['no-load']) {
    load = await measure('load times, cold and warm', () => loadTimes({ model: models.llm[quants[0]], projector: models.clip, threads, ctx: DEFAULTS.ctx, runs: Math.max(3, runs) }));
    load.quant = quants[0];
  }
  meta.loadAvgEnd = loadavg();
  return { meta, cases, growth, load, files: fileSizes(models) };
}

/** One contender's single-run results as one result: every run, the highest peak RSS. */
function mergeRuns(parts) {
  const failed = parts.find((p) => p.error);
  if (failed) return { error: failed.error };
  return { ...parts[0], runs: parts.flatMap((p) => p.runs ?? []), peakRssMiB: Math.max(...parts.map((p) => p.peakRssMiB ?? NaN).filter(Number.isFinite)) };
}

/** The prebuilt addon of this version for this machine, if \`npm run prebuild\` has made one. */
function prebuildBinary() {
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  try {
    const info = JSON.parse(readFileSync(join(dir, 'build-info.json'), 'utf8'));
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    return info.version === pkg.version && info.llamaCommit === getSystemInfo().llamaCommit ? join(dir, 'minigpt.node') : null;
  } catch {
    return null;
  }
}

function pkgVersion(name) {
  try {
    return JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

// File sizes in MiB: what the weights would take if nothing were copied.
function fileSizes(models) {
  const files = { ...models.llm, clip: models.clip, blip2: models.blip2 };
  return Object.fromEntries(Object.entries(files).filter(([, f]) => f).map(([k, f]) => [k, statSync(f).size / 2 ** 20]));
}
