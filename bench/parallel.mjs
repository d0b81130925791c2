#!/usr/bin/env node
// npm run bench:parallel: many sessions streaming at once on one model. Compares one stream
// alone with N streams sharing a context (loadModel({ parallelSessions: N }), decode steps
// batched) and N streams with a context each (parallelSessions: 1, every stream decoding on its
// own). Figures: aggregate generated tokens/s, and how long a stream waits for its next token
// while the others run (the starvation bound N ms asked for by issue 6).
//
//   npm run bench:parallel -- [--sessions 16] [--prompt-tokens 32] [--gen-tokens 64]
//                             [--threads 2] [--quant Q4_0] [--runs 2] [--contexts-each]
import { parseArgs } from 'node:util';
import { loadModel } from '../dist/index.js';
import { ensureModels } from './models.mjs';
import { promptText, summary } from './workload.mjs';

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '16' },
    'prompt-tokens': { type: 'string', default: '32' },
    'gen-tokens': { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
    quant: { type: 'string', default: 'Q4_0' },
    runs: { type: 'string', default: '2' },
    'contexts-each': { type: 'boolean' },
  },
});
const sessions = Number(values.sessions);
const promptTokens = Number(values['prompt-tokens']);
const genTokens = Number(values['gen-tokens']);
const threads = Number(values.threads);
const runs = Number(values.runs);
const contextSize = 512;

const models = await ensureModels({ quants: [values.quant], blip2: false, threads });
const now = () => performance.now();

/** Streams `count` sessions at once; returns aggregate rate and every stream's waits between tokens. */
async function streamAll(model, count, run) {
  const list = Array.from({ length: count }, () => model.createSession({ template: 'none', contextSize }));
  const t0 = now();
  const per = await Promise.all(
    list.map(async (session, i) => {
      const stamps = [];
      for await (const _ of session.stream(promptText(promptTokens, run * 31 + i), { temperature: 0, maxTokens: genTokens })) stamps.push(now());
      return stamps;
    }),
  );
  const end = Math.max(...per.map((s) => s.at(-1)));
  // Decode phase: from the moment every stream has its first token to the last token of all.
  const allStarted = Math.max(...per.map((s) => s[0]));
  const afterStart = per.reduce((n, s) => n + s.filter((t) => t > allStarted).length, 0);
  const gaps = per.flatMap((s) => s.slice(1).map((t, k) => t - s[k]));
  await Promise.all(list.map((s) => s.dispose()));
  return {
    generated: per.reduce((n, s) => n + s.length, 0),
    endToEndTokS: per.reduce((n, s) => n + s.length, 0) / ((end - t0) / 1000),
    decodeTokS: afterStart / ((end - allStarted) / 1000),
    ttftMaxMs: Math.max(...per.map((s) => s[0] - t0)),
    gapMaxMs: Math.max(...gaps),
    gapP99Ms: gaps.sort((a, b) => a - b)[Math.min(gaps.length - 1, Math.floor(gaps.length * 0.99))],
  };
}

async function measure(label, parallelSessions, count) {
  const model = await loadModel({ model: models.llm[values.quant], threads, contextSize, parallelSessions });
  await streamAll(model, count, 99); // warm-up: page faults, the contexts' first allocation
  const results = [];
  for (let r = 0; r < runs; r++) results.push(await streamAll(model, count, r));
  await model.dispose();
  const med = (k) => summary(results.map((x) => x[k])).median;
  const worst = (k) => Math.max(...results.map((x) => x[k]));
  return { label, count, endToEndTokS: med('endToEndTokS'), decodeTokS: med('decodeTokS'), ttftMaxMs: worst('ttftMaxMs'), gapMaxMs: worst('gapMaxMs'), gapP99Ms: med('gapP99Ms') };
}

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
console.log(`bench:parallel  ${values.quant} TinyLlama-shaped, ${threads} threads, ${promptTokens}-token prompts, ${genTokens} generated each, median of ${runs} runs (gaps: worst of all runs)`);
console.log(['streams'.padEnd(62), 'aggregate tok/s', 'decode-phase tok/s', 'x single', 'worst TTFT ms', 'token gap p99 ms', 'worst gap ms'].join('  '));
const cases = [
  ['1 stream alone', 1, 1],
  [`${sessions} streams, one shared context (parallelSessions: ${sessions})`, sessions, sessions],
];
// Every stream with its own context: 2 x sessions threads on the cores (slow; --contexts-each to include).
if (values['contexts-each']) cases.push([`${sessions} streams, a context each (parallelSessions: 1)`, 1, sessions]);
let single;
for (const [label, parallelSessions, count] of cases) {
  const r = await measure(label, parallelSessions, count);
  single ??= r;
  console.log(
    [r.label.padEnd(62), fmt(r.endToEndTokS).padStart(15), fmt(r.decodeTokS).padStart(18), fmt(r.decodeTokS / single.decodeTokS, 2).padStart(8),
      fmt(r.ttftMaxMs, 0).padStart(13), fmt(r.gapP99Ms, 0).padStart(16), fmt(r.gapMaxMs, 0).padStart(12)].join('  '),
  );
}
