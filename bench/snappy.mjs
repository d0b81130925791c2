#!/usr/bin/env node
// npm run bench:snappy (issue 19): how an app's JS thread fares while the library works, with the
// realistic-shape models (TinyLlama-shaped Q4_0 LLM, CLIP ViT-B/16 projector; bench/models.mjs).
// Per phase (load, encode, first stream of a new session, a stream on a warm session, session
// dispose, model dispose): the longest single block of the event loop and its p99, measured with
// monitorEventLoopDelay at 1 ms resolution (what exceeds the interval is a block), beside the
// 16.7 ms of one 60 Hz frame. And the first token of a new session against a warm one's.
//   node bench/snappy.mjs [--rounds 3] [--prompt-tokens 128] [--threads 2]
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadModel } from '../dist/index.js';
import { ensureModels } from './models.mjs';
import { promptText } from './workload.mjs';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, 'prompt-tokens': { type: 'string', default: '128' }, threads: { type: 'string', default: '2' } } });
const rounds = Number(values.rounds);
const promptTokens = Number(values['prompt-tokens']);
const threads = Number(values.threads);
const FRAME_MS = 1000 / 60;
const models = await ensureModels({ quants: ['Q4_0'], blip2: false, threads });

function watch() {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  return () => {
    h.disable();
    const block = (ns) => Math.max(0, ns / 1e6 - 1);
    return h.count > 0 ? { max: block(h.max), p99: block(h.percentile(99)) } : { max: 0, p99: 0 };
  };
}
const phases = {};
function record(name, figures) {
  (phases[name] ??= []).push(figures);
}
async function measure(name, work) {
  const stop = watch();
  const out = await work();
  // A block at the very end shows only when the timer it delayed fires.
  await new Promise((resolve) => setTimeout(resolve, 20));
  record(name, stop());
  return out;
}
async function firstToken(session, prompt) {
  const t0 = performance.now();
  let first;
  for await (const _ of session.stream(prompt, { maxTokens: 8, temperature: 0 })) first ??= performance.now() - t0;
  return first;
}

const firsts = { fresh: [], warm: [] };
for (let round = 0; round < rounds; round++) {
  const model = await measure('load', () => loadModel({ model: models.llm.Q4_0, projector: models.clip, threads }));
  const image = await measure('encode', () => model.encodeImage(models.pictures[round % models.pictures.length]));
  // Warm: a session that has run once; its second request evaluates a prompt of the same size.
  const warm = model.createSession({ template: 'none' });
  await firstToken(warm, promptText(promptTokens, 1000 + round));
  await warm.reset();
  firsts.warm.push(await measure('stream (warm session)', () => firstToken(warm, promptText(promptTokens, 2000 + round))));
  await measure('session dispose', () => warm.dispose());
  // New: a session created just before its first request, as a chat app opening a conversation.
  const fresh = model.createSession({ template: 'none' });
  firsts.fresh.push(await measure('stream (new session)', () => firstToken(fresh, promptText(promptTokens, 3000 + round))));
  await fresh.dispose();
  await image.dispose();
  await measure('model dispose', () => model.dispose());
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = Object.entries(phases).map(([phase, list]) => {
  const max = Math.max(...list.map((f) => f.max));
  return { phase, 'longest block ms': +max.toFixed(1), 'p99 ms': +Math.max(...list.map((f) => f.p99)).toFixed(1), 'frames (16.7 ms)': +(max / FRAME_MS).toFixed(2), 'within a frame': max <= FRAME_MS ? 'yes' : 'NO' };
});
console.log(`JS thread blocks over ${rounds} rounds (${threads} threads, ${promptTokens}-token prompts):`);
console.table(rows);
const fresh = median(firsts.fresh);
const warm = median(firsts.warm);
console.log(`first token: new session ${fresh.toFixed(0)} ms, warm session ${warm.toFixed(0)} ms (median of ${rounds}): ${(fresh / warm).toFixed(2)}x (target <= 1.1x)`);
