#!/usr/bin/env node
// npm run bench:serve: `minigpt serve` against llama.cpp's llama-server (built from the same
// source, build/oracles), the same model, projector, slots and threads, each started as a child
// process on 127.0.0.1. At each level N clients run at once; each sends its requests one after
// another, every request a fresh picture (PNG data URL) and a question, streamed, greedy, a fixed
// number of tokens. Figures per server and level: aggregate completion tokens/s (from each
// answer's usage), time to first token p50 / p99 and the gap between tokens p99, measured at the
// client; then ours / llama-server (target: throughput >= 1.0x, p99s <= 1.0x).
//
//   npm run bench:serve -- [--clients 1,4,16] [--requests N] [--max-tokens 64] [--parallel 4]
//                          [--threads 2] [--context-size 512] [--quant Q4_0]
//                          [--only ours|llama-server] [--json FILE] [--logs DIR] [--help]
// --requests is per client; by default 4 / 2 / 1 at 1 / 4 / 16 clients (more at smaller levels
// so every level has a few samples), times BENCH_SERVE_SCALE (default 1) for steadier figures.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cacheDir, ensureModels, oracles, root, writePicture } from './models.mjs';
import { promptText } from './workload.mjs';

const SERVERS = ['ours', 'llama-server'];
const OPTIONS = {
  clients: { type: 'string', default: '1,4,16' },
  requests: { type: 'string' },
  'max-tokens': { type: 'string', default: '64' },
  parallel: { type: 'string', default: '4' },
  threads: { type: 'string', default: '2' },
  'context-size': { type: 'string', default: '512' },
  quant: { type: 'string', default: 'Q4_0' },
  only: { type: 'string', default: SERVERS.join(',') },
  json: { type: 'string' },
  logs: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

let values;
try {
  ({ values } = parseArgs({ options: OPTIONS }));
} catch (err) {
  process.stderr.write(`bench:serve: ${err.message} (npm run bench:serve -- --help lists the options)\n`);
  process.exit(2);
}
if (values.help) {
  const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n').slice(1);
  const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
  process.stdout.write(header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
  process.exit(0);
}

const positive = (name) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`bench:serve: --${name} must be a positive integer, not ${values[name]}\n`);
    process.exit(2);
  }
  return n;
};
const maxTokens = positive('max-tokens');
const slots = positive('parallel');
const threads = positive('threads');
const perSlotContext = positive('context-size');
const levels = values.clients.split(',').map((s) => Number(s.trim()));
if (levels.some((n) => !Number.isInteger(n) || n < 1)) {
  process.stderr.write(`bench:serve: --clients must be a list of positive integers, not ${values.clients}\n`);
  process.exit(2);
}
const scale = Number(process.env.BENCH_SERVE_SCALE ?? 1);
if (!(scale > 0)) {
  process.stderr.write(`bench:serve: BENCH_SERVE_SCALE must be a positive number, not ${process.env.BENCH_SERVE_SCALE}\n`);
  process.exit(2);
}
const only = values.only.split(',').map((s) => s.trim()).filter(Boolean);
for (const name of only) {
  if (!SERVERS.includes(name)) {
    process.stderr.write(`bench:serve: --only takes ${SERVERS.join(', ')}, not ${name}\n`);
    process.exit(2);
  }
}
const requestsPerClient = (clients) =>
  values.requests !== undefined ? positive('requests') : Math.max(1, Math.round((clients === 1 ? 4 : clients <= 4 ? 2 : 1) * scale));

const HEALTH_TIMEOUT_MS = 5 * 60_000;
const REQUEST_TIMEOUT_MS = 10 * 60_000;
const llamaServer = join(oracles, 'llama-server');
const ourCli = join(root, 'dist', 'cli', 'index.js');

// ---------------------------------------------------------------------------------------------
// Servers as child processes

/** A port nobody listens on now (the server binds it a moment later; a clash fails loudly). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const running = new Set();
// A bench that dies (an error, Ctrl-C) must not leave a server holding the cores.
process.on('exit', () => { for (const c of running) c.kill('SIGKILL'); });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

function commandFor(name, models, port) {
  const common = { host: '127.0.0.1', port: String(port) };
  if (name === 'ours') {
    if (!existsSync(ourCli)) throw new Error(`${ourCli} is missing: run npm run build:ts first`);
    return [process.execPath, [ourCli, 'serve', '--model', models.llm, '--projector', models.clip, '--host', common.host, '--port', common.port,
      '--parallel', String(slots), '--context-size', String(perSlotContext), '--threads', String(threads), '--no-ui']];
  }
  if (!existsSync(llamaServer)) throw new Error(`${llamaServer} is missing: run npm run build:native (it builds the oracles)`);
  // -c is the whole context, split evenly between the -np slots.
  return [llamaServer, ['-m', models.llm, '--mmproj', models.clip, '--host', common.host, '--port', common.port,
    '-np', String(slots), '-c', String(slots * perSlotContext), '-t', String(threads), '--no-webui']];
}

/** Starts a server and resolves once GET /health answers 200. */
async function startServer(name, models) {
  const port = await freePort();
  const [cmd, args] = commandFor(name, models, port);
  const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  let log = '';
  child.stderr.on('data', (d) => { log = (log + d).slice(-8000); });
  if (values.logs) {
    mkdirSync(values.logs, { recursive: true });
    child.stderr.pipe(createWriteStream(join(values.logs, `${name}.log`)));
  }
  let exited = null;
  child.on('exit', (code, signal) => { exited = code ?? signal; running.delete(child); });
  const base = `http://127.0.0.1:${port}`;
  const server = { name, base, child, log: () => log };
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  const t0 = performance.now();
  while (Date.now() < deadline) {
    if (exited !== null) throw new Error(`${name} exited (${exited}) before it was ready:\n  ${tail(log)}`);
    try {
      const r = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2000) });
      await r.arrayBuffer();
      if (r.status === 200) {
        process.stderr.write(`bench:serve: ${name} ready on ${base} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
        return server;
      }
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  await stopServer(server);
  throw new Error(`${name} did not answer GET /health with 200 within ${HEALTH_TIMEOUT_MS / 1000} s:\n  ${tail(log)}`);
}

async function stopServer(server) {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await gone;
  clearTimeout(timer);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const tail = (text) => text.trim().split('\n').slice(-8).join('\n  ');

// ---------------------------------------------------------------------------------------------
// One streamed request, timed at the client

/**
 * POSTs JSON with node:http rather than fetch: fetch gives up on a response whose headers take
 * over 5 minutes, and a request queued behind 15 others on a busy 2-core machine can wait that
 * long before its server answers at all. One deadline covers the whole exchange instead.
 */
function post(url, body) {
  return new Promise((resolve, reject) => {
    // A connection per request: a kept-alive one may be closed by the server just as it is
    // reused (cpp-httplib drops idle ones after 5 s), which fails the request for nothing.
    const req = request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }, resolve);
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Sends one chat completion with a picture and a question and reads its SSE stream.
 * @returns {Promise<{ tokens: number, chunks: number, ttftMs: number, gapsMs: number[], finish: string }>}
 */
async function ask(server, picture, question) {
  const body = {
    model: 'bench',
    messages: [{ role: 'user', content: [{ type: 'text', text: question }, { type: 'image_url', image_url: { url: picture } }] }],
    stream: true,
    stream_options: { include_usage: true },
    temperature: 0,
    max_tokens: maxTokens,
    // llama-server's own field; ours ignores unknown fields. The bench model never picks EOS
    // anyway (models.mjs zeroes its output row), so both generate max_tokens.
    ignore_eos: true,
  };
  const t0 = performance.now();
  const res = await post(`${server.base}/v1/chat/completions`, JSON.stringify(body));
  if (res.statusCode !== 200) {
    let text = '';
    for await (const b of res) text += b;
    throw new Error(`${server.name} answered ${res.statusCode}: ${text.slice(0, 500)}`);
  }
  const stamps = [];
  let usage = null, finish = null, done = false, buffer = '', text = '';
  const decoder = new TextDecoder();
  for await (const bytes of res) {
    const now = performance.now();
    buffer += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') { done = true; continue; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(`${server.name} streamed an error: ${JSON.stringify(chunk.error)}`);
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices?.[0];
        if (choice?.finish_reason) finish = choice.finish_reason;
        // The first chunk may carry only the role; a token is a chunk with text.
        if (typeof choice?.delta?.content === 'string' && choice.delta.content.length > 0) {
          stamps.push(now);
          text += choice.delta.content;
        }
      }
    }
  }
  if (!done) throw new Error(`${server.name}'s stream ended without data: [DONE]`);
  if (stamps.length === 0) throw new Error(`${server.name} streamed no text`);
  return {
    // usage is the server's own count; without it, one chunk per token (both servers send so).
    tokens: usage?.completion_tokens ?? stamps.length,
    hasUsage: usage !== null,
    promptTokens: usage?.prompt_tokens ?? NaN,
    text,
    chunks: stamps.length,
    ttftMs: stamps[0] - t0,
    gapsMs: stamps.slice(1).map((t, i) => t - stamps[i]),
    finish,
  };
}

// ---------------------------------------------------------------------------------------------
// Levels

/** Nearest-rank percentile of a list of numbers. */
function percentile(xs, p) {
  const v = [...xs].sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
}

async function runLevel(server, clients, first) {
  const perClient = requestsPerClient(clients);
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const mine = [];
      for (let r = 0; r < perClient; r++) {
        const k = first + c * perClient + r;
        mine.push({ k, ...(await ask(server, pictures[k], questions[k])) });
      }
      return mine;
    }),
  );
  const wallS = (performance.now() - t0) / 1000;
  const all = results.flat();
  const tokens = all.reduce((n, r) => n + r.tokens, 0);
  const gaps = all.flatMap((r) => r.gapsMs);
  return {
    clients,
    requests: all.length,
    tokens,
    wallS,
    tokS: tokens / wallS,
    ttftP50Ms: percentile(all.map((r) => r.ttftMs), 50),
    ttftP99Ms: percentile(all.map((r) => r.ttftMs), 99),
    gapP50Ms: percentile(gaps, 50),
    gapP99Ms: percentile(gaps, 99),
    promptTokensP50: percentile(all.map((r) => r.promptTokens), 50),
    answers: Object.fromEntries(all.map((r) => [r.k, r.text])),
    short: all.filter((r) => r.tokens < maxTokens).length,
    noUsage: all.filter((r) => !r.hasUsage).length,
    chunkMismatch: all.filter((r) => r.chunks !== r.tokens).length,
  };
}

// ---------------------------------------------------------------------------------------------
// Main

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');

const bench = await ensureModels({ quants: [values.quant], blip2: false, threads });
const models = { llm: bench.llm[values.quant], clip: bench.clip };

// A different picture and question for every request of the run (each server gets the same
// ones): neither server can reuse an earlier request's image encoding or KV prefix (llama-server
// keeps old prompts in RAM, ours keeps image embeddings), so each does the whole work a new user
// brings. Level i uses the requests from firsts[i]; the last one is the warm-up.
const firsts = levels.map((_, i) => levels.slice(0, i).reduce((n, c) => n + c * requestsPerClient(c), 0));
const totalRequests = levels.reduce((n, c) => n + c * requestsPerClient(c), 0) + 1;
const pictures = [];
for (let i = 0; i < totalRequests; i++) {
  const path = join(cacheDir, `serve-picture-${i}.png`);
  if (!existsSync(path)) await writePicture(path, 100 + i);
  pictures.push(`data:image/png;base64,${readFileSync(path).toString('base64')}`);
}
const questions = pictures.map((_, i) => `${promptText(16, i)}?`);

process.stderr.write(
  `bench:serve: ${values.quant} TinyLlama-shaped LLM + CLIP ViT-B/16 projector, ${slots} slots x ${perSlotContext} tokens, ${threads} threads, ` +
    `${maxTokens} tokens per answer, levels ${levels.join(' / ')} clients\n`,
);

// Both servers stay up (an idle one uses no CPU) and take turns level by level, the order
// rotating (A B, B A, ...), so other work on the shared machine and its drift over minutes fall
// on both alike rather than on whichever ran second. The load average is kept with each figure.
const servers = [];
const results = Object.fromEntries(only.map((name) => [name, []]));
try {
  for (const name of only) {
    const server = await startServer(name, models);
    servers.push(server);
    // Warm-up: first-touch page faults and first allocations, not part of any level.
    await ask(server, pictures.at(-1), questions.at(-1));
  }
  for (const [i, clients] of levels.entries()) {
    const order = servers.map((_, j) => servers[(i + j) % servers.length]);
    for (const server of order) {
      const loadBefore = loadavg()[0];
      let r;
      try {
        r = await runLevel(server, clients, firsts[i]);
      } catch (err) {
        err.message += `\n  ${server.name}'s last log lines:\n  ${tail(server.log())}`;
        throw err;
      }
      r.load = [loadBefore, loadavg()[0]];
      results[server.name][i] = r;
      process.stderr.write(`bench:serve: ${server.name} ${clients} clients: ${r.requests} requests, ${fmt(r.tokS)} tok/s, TTFT p99 ${fmt(r.ttftP99Ms, 0)} ms\n`);
    }
  }
} finally {
  await Promise.all(servers.map(stopServer));
}
const loads = Object.values(results).flat().flatMap((r) => r.load);

const header = ['server', 'clients', 'requests', 'prompt', 'tokens', 'wall s', 'tok/s', 'TTFT p50 ms', 'TTFT p99 ms', 'gap p50 ms', 'gap p99 ms', 'load'];
const widths = [12, 7, 8, 6, 6, 6, 7, 11, 11, 10, 10, 11];
const row = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
console.log(`bench:serve  ${values.quant} TinyLlama-shaped + CLIP ViT-B/16 (224 px, 196 image tokens), ${slots} slots, ${threads} threads, ${maxTokens} tokens/answer, streamed, greedy`);
console.log(`${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} CPUs; Node ${process.version}; load: the 1-minute load average before and after each measurement`);
if (Math.max(...loads) > availableParallelism() + 0.5) {
  console.log(`warning: the machine was busy with other work (load above its ${availableParallelism()} CPUs): figures are low and noisy, ratios between the servers carry that noise`);
}
console.log(row(header));
for (const name of only) {
  for (const r of results[name]) {
    console.log(row([name, r.clients, r.requests, fmt(r.promptTokensP50, 0), r.tokens, fmt(r.wallS), fmt(r.tokS), fmt(r.ttftP50Ms, 0), fmt(r.ttftP99Ms, 0), fmt(r.gapP50Ms, 0), fmt(r.gapP99Ms, 0), r.load.map((l) => l.toFixed(1)).join('-')]));
  }
}
for (const name of only) {
  for (const r of results[name]) {
    if (r.short) console.log(`note: ${name} at ${r.clients} clients: ${r.short} answers ended before ${maxTokens} tokens (throughput counts the real tokens)`);
    if (r.noUsage) console.log(`note: ${name} at ${r.clients} clients: ${r.noUsage} answers had no usage chunk (counted text chunks instead)`);
    if (r.chunkMismatch) console.log(`note: ${name} at ${r.clients} clients: ${r.chunkMismatch} answers sent a different number of text chunks than completion tokens`);
  }
}

if (results.ours && results['llama-server']) {
  // Same model, picture, question and greedy sampling: the texts should match, a check that both
  // servers did the same work (batched evaluation may round differently, so this is a note).
  results.ours.forEach((o, i) => {
    const l = results['llama-server'][i];
    const keys = Object.keys(o.answers);
    const same = keys.filter((k) => o.answers[k] === l.answers[k]).length;
    console.log(`answers identical to llama-server's at ${o.clients} clients: ${same} / ${keys.length}`);
  });
  console.log('\nours / llama-server (target: throughput >= 1.00, p99s <= 1.00)');
  console.log(['clients'.padStart(7), 'throughput'.padStart(10), 'TTFT p99'.padStart(8), 'gap p99'.padStart(8), 'meets target'.padStart(12)].join('  '));
  results.ours.forEach((o, i) => {
    const l = results['llama-server'][i];
    const tput = o.tokS / l.tokS, ttft = o.ttftP99Ms / l.ttftP99Ms, gap = o.gapP99Ms / l.gapP99Ms;
    const meets = tput >= 1 && ttft <= 1 && gap <= 1;
    console.log([String(o.clients).padStart(7), fmt(tput, 2).padStart(10), fmt(ttft, 2).padStart(8), fmt(gap, 2).padStart(8), (meets ? 'yes' : 'no').padStart(12)].join('  '));
  });
}

if (values.json) {
  const settings = { quant: values.quant, slots, perSlotContext, threads, maxTokens, levels, scale };
  writeFileSync(values.json, JSON.stringify({ settings, results }, null, 1));
  process.stderr.write(`bench:serve: wrote ${values.json}\n`);
}
