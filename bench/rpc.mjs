#!/usr/bin/env node
// npm run bench:rpc: one model, computed locally and split over two `minigpt rpc-server`s on
// 127.0.0.1 (ggml's RPC backend). The same cores either way: the local run computes with
// --threads, each server with half of them. Figures: prompt and decode tokens/s, and the ratio.
// What loopback hides (latency, bandwidth of a real network) is in docs/rpc.md.
//
//   npm run bench:rpc -- [--prompt-tokens 128] [--gen-tokens 64] [--threads 2] [--quant Q4_0] [--runs 3]
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { getRpcDevices, loadModel } from '../dist/index.js';
import { ensureModels, root } from './models.mjs';
import { promptText, summary } from './workload.mjs';

const { values } = parseArgs({
  options: {
    'prompt-tokens': { type: 'string', default: '128' },
    'gen-tokens': { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
    quant: { type: 'string', default: 'Q4_0' },
    runs: { type: 'string', default: '3' },
  },
});
const promptTokens = Number(values['prompt-tokens']);
const genTokens = Number(values['gen-tokens']);
const threads = Number(values.threads);
const runs = Number(values.runs);
const serverThreads = Math.max(1, Math.floor(threads / 2));

const models = await ensureModels({ quants: [values.quant], blip2: false, threads });
const modelPath = models.llm[values.quant];

async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

const children = [];
async function startServer() {
  const endpoint = `127.0.0.1:${await freePort()}`;
  const child = spawn(process.execPath, [join(root, 'dist', 'cli', 'index.js'), 'rpc-server', '--port', endpoint.split(':')[1], '--threads', String(serverThreads)], { stdio: 'ignore' });
  children.push(child);
  for (let i = 0; ; i++) {
    try {
      await getRpcDevices([endpoint]);
      return endpoint;
    } catch (err) {
      if (i > 200) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Prompt and decode rates of one load, best of `runs` fresh sessions. */
async function measure(options) {
  const t0 = performance.now();
  const model = await loadModel({ model: modelPath, threads, contextSize: 1024, ...options });
  const loadMs = performance.now() - t0;
  const prompt = [];
  const decode = [];
  for (let run = 0; run < runs; run++) {
    const session = model.createSession({ template: 'none' });
    const start = performance.now();
    let first = 0;
    let n = 0;
    for await (const _ of session.stream(promptText(promptTokens, run), { temperature: 0, maxTokens: genTokens })) {
      if (n++ === 0) first = performance.now();
    }
    const end = performance.now();
    const stats = session.stats;
    prompt.push(stats.promptTokens / ((first - start) / 1000));
    decode.push((stats.generatedTokens - 1) / ((end - first) / 1000));
    await session.dispose();
  }
  await model.dispose();
  return { loadMs, prompt: summary(prompt), decode: summary(decode) };
}

try {
  const local = await measure({});
  // The servers compute one after the other for a single stream, each with serverThreads: this
  // is the local run with the compute a stream sees there.
  const localNarrow = serverThreads === threads ? local : await measure({ threads: serverThreads });
  const servers = [await startServer(), await startServer()];
  const split = await measure({ rpcServers: servers, gpuLayers: 'max', tensorSplit: [1, 1] });
  const row = (name, r) =>
    `${name.padEnd(28)} ${r.loadMs.toFixed(0).padStart(8)} ${r.prompt.median.toFixed(1).padStart(10)} ${r.decode.median.toFixed(1).padStart(10)}`;
  console.log(`bench:rpc  ${values.quant} TinyLlama-shaped, ${promptTokens}-token prompt, ${genTokens} tokens, ${threads} threads here / ${serverThreads} per server, median of ${runs}`);
  console.log(`${'where'.padEnd(28)} ${'load ms'.padStart(8)} ${'prompt t/s'.padStart(10)} ${'decode t/s'.padStart(10)}`);
  console.log(row(`local CPU, ${threads} threads`, local));
  if (localNarrow !== local) console.log(row(`local CPU, ${serverThreads} thread(s)`, localNarrow));
  console.log(row('2 loopback rpc-servers', split));
  const ratio = (a, b) => `prompt ${(a.prompt.median / b.prompt.median).toFixed(2)}x, decode ${(a.decode.median / b.decode.median).toFixed(2)}x`;
  console.log(`split / local ${threads} threads: ${ratio(split, local)}`);
  if (localNarrow !== local) console.log(`split / local ${serverThreads} thread(s): ${ratio(split, localNarrow)}  (the network's own cost on loopback)`);
} finally {
  for (const c of children) c.kill('SIGKILL');
}
