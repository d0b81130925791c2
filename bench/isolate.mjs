#!/usr/bin/env node
// npm run bench:isolate: what running a model in a process of its own (loadModel({ isolate:
// true })) costs per token. The same model in-process and isolated, taking turns round by round
// (A B, B A, ...) so that load from other work falls on both alike; only one of them is loaded
// at a time (two idle models' thread pools would compete for the cores and blur the figure).
// Figures: decode tokens/s (time from the first piece to the last) and prompt tokens/s, per
// mode, with the ratio; and, less at the mercy of a shared machine's noise, the CPU time per
// generated token of every process involved (Linux: /proc), whose difference is the work the
// isolation adds. The target is a per-token cost under 2 %.
//
//   npm run bench:isolate -- [--prompt-tokens 128] [--gen-tokens 128] [--threads 2] [--quant Q4_0] [--rounds 6]
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadModel } from '../dist/index.js';
import { ensureModels } from './models.mjs';
import { promptText, summary } from './workload.mjs';

const { values } = parseArgs({
  options: {
    'prompt-tokens': { type: 'string', default: '128' },
    'gen-tokens': { type: 'string', default: '128' },
    threads: { type: 'string', default: '2' },
    quant: { type: 'string', default: 'Q4_0' },
    rounds: { type: 'string', default: '6' },
  },
});
const promptTokens = Number(values['prompt-tokens']);
const genTokens = Number(values['gen-tokens']);
const threads = Number(values.threads);
const rounds = Number(values.rounds);

const models = await ensureModels({ quants: [values.quant], blip2: false, threads });
const modelPath = models.llm[values.quant];
const modes = { 'in-process': { isolate: false }, isolated: { isolate: true } };
const rates = Object.fromEntries(Object.keys(modes).map((m) => [m, { prompt: [], decode: [], cpu: [] }]));

// CPU milliseconds so far of this process and its isolated-model children (Linux only).
const procfs = existsSync('/proc/self/stat');
function modelPids() {
  try {
    return execFileSync('pgrep', ['-P', String(process.pid), '-f', 'isolate/host.js'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}
function cpuMs(pids) {
  return pids.reduce((sum, pid) => {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return sum + (Number(fields[11]) + Number(fields[12])) * 10;  // USER_HZ ticks
  }, 0);
}
const streamsPerRound = 2;

async function once(model, run) {
  const session = model.createSession({ template: 'none' });
  const pids = procfs ? ['self', ...modelPids()] : [];
  const start = performance.now();
  let first = 0;
  let cpuAtFirst = 0;
  let n = 0;
  for await (const _ of session.stream(promptText(promptTokens, run), { temperature: 0, maxTokens: genTokens })) {
    if (n++ === 0) {
      first = performance.now();
      if (procfs) cpuAtFirst = cpuMs(pids);
    }
  }
  const end = performance.now();
  const cpu = procfs ? cpuMs(pids) - cpuAtFirst : NaN;
  const { promptTokens: p, generatedTokens: g } = session.stats;
  await session.dispose();
  return { prompt: p / ((first - start) / 1000), decode: (g - 1) / ((end - first) / 1000), cpu: cpu / (g - 1) };
}

for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? ['in-process', 'isolated'] : ['isolated', 'in-process'];
  for (const mode of order) {
    const model = await loadModel({ model: modelPath, threads, contextSize: 1024, ...modes[mode] });
    try {
      for (let i = 0; i < streamsPerRound; i++) {
        const r = await once(model, round * streamsPerRound + i);
        rates[mode].prompt.push(r.prompt);
        rates[mode].decode.push(r.decode);
        rates[mode].cpu.push(r.cpu);
      }
    } finally {
      await model.dispose();
    }
  }
}
console.log(`bench:isolate  ${values.quant} TinyLlama-shaped, ${promptTokens}-token prompt, ${genTokens} tokens, ${threads} threads, ${rounds} rounds of ${streamsPerRound} streams taking turns (median, min-max)`);
console.log(`${'mode'.padEnd(12)} ${'prompt t/s'.padStart(22)} ${'decode t/s'.padStart(22)} ${'CPU ms/token'.padStart(22)}`);
const cell = (s) => `${s.median.toFixed(1)} (${s.min.toFixed(1)}-${s.max.toFixed(1)})`.padStart(22);
for (const mode of Object.keys(modes)) console.log(`${mode.padEnd(12)} ${cell(summary(rates[mode].prompt))} ${cell(summary(rates[mode].decode))} ${cell(summary(rates[mode].cpu))}`);
const ratio = (k) => summary(rates.isolated[k]).median / summary(rates['in-process'][k]).median;
console.log(`isolated / in-process: prompt ${ratio('prompt').toFixed(3)}x, decode ${ratio('decode').toFixed(3)}x (cost per token by time ${((1 / ratio('decode') - 1) * 100).toFixed(1)} %)`);
if (procfs) console.log(`CPU per token, isolated / in-process: ${ratio('cpu').toFixed(3)}x (${((ratio('cpu') - 1) * 100).toFixed(1)} % more work; the compute threads' spinning counts, so a slower run costs more CPU too)`);
