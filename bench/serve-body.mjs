#!/usr/bin/env node
// npm run bench:serve-body: how long one ~20 MB chat request body blocks the server's JS thread.
// "before" is the parse done on the JS thread, as the server did it up to issue 18: the body's
// chunks concatenated, UTF-8, JSON.parse, the request checked and the data URL decoded (the
// same functions the body thread runs now). "after" is the longest event-loop delay
// (monitorEventLoopDelay, 1 ms resolution) in the server's process while `createServer`, over
// the tiny fixture model, answers the same body sent by a client in another process. Two bodies:
// a 14 MiB noise PNG as base64, and the small fixture PNG padded with "%20" (the slowest path of
// the data URL rules: percent-decoding, then whitespace stripped).
//
//   npm run bench:serve-body -- [--runs 3]
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { createServer, loadModel } from '../dist/index.js';
import { decodeChatBody } from '../dist/server/body-decode.js';
import { writeTinyLlama, writeTinyMmproj } from '../tools/fixtures/models.js';
import { testPixels } from '../tools/fixtures/pixels.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  process.stderr.write(`bench:serve-body: --runs must be a positive integer, not ${values.runs}\n`);
  process.exit(2);
}

// The client: one POST per line on stdin ("<file>"), one line back per answer ("<status>").
const CLIENT = `
const { readFileSync } = require('node:fs');
const { request } = require('node:http');
const url = process.argv[1];
require('node:readline').createInterface({ input: process.stdin }).on('line', (file) => {
  const body = readFileSync(file);
  const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
    res.resume();
    res.on('end', () => process.stdout.write(res.statusCode + '\\n'));
  });
  req.on('error', (err) => process.stdout.write('error ' + err.message + '\\n'));
  req.end(body);
});`;

const dir = await mkdtemp(join(tmpdir(), 'minigpt-bench-body-'));
let server, model, client;
try {
  await writeTinyLlama(join(dir, 'llama.gguf'));
  await writeTinyMmproj(join(dir, 'mmproj.gguf'), { nEmbdText: 64 });
  model = await loadModel({ model: join(dir, 'llama.gguf'), projector: join(dir, 'mmproj.gguf'), threads: 2 });
  server = createServer(model, { parallel: 1 });
  const { port } = await server.listen(0);

  const pixels = testPixels();
  const small = await sharp(pixels.data, { raw: { width: pixels.width, height: pixels.height, channels: 3 } }).png().toBuffer();
  const side = 2200;
  const noise = Buffer.alloc(side * side * 3);
  for (let i = 0, x = 1; i < noise.length; i++) noise[i] = (x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + i) >>> 24;
  const large = await sharp(noise, { raw: { width: side, height: side, channels: 3 } }).png({ compressionLevel: 0 }).toBuffer();
  const lines = small.toString('base64').match(/.{1,76}/g);
  const padded = lines.join('%20'.repeat(Math.ceil(19.5e6 / 3 / lines.length)));
  const request = (url) => JSON.stringify({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: 'What is in the picture?' }] }], temperature: 0, max_tokens: 8 });
  const bodies = [
    [`${(large.length / 2 ** 20).toFixed(1)} MiB noise PNG, base64`, Buffer.from(request(`data:image/png;base64,${large.toString('base64')}`))],
    ['fixture PNG padded with %20', Buffer.from(request(`data:image/png;base64,${padded}`))],
  ];

  client = spawn(process.execPath, ['-e', CLIENT, `http://127.0.0.1:${port}/v1/chat/completions`], { stdio: ['pipe', 'pipe', 'inherit'] });
  const answers = [];
  let waiting;
  client.stdout.setEncoding('utf8').on('data', (text) => {
    for (const line of text.split('\n').filter(Boolean)) answers.push(line);
    waiting?.();
  });
  const send = async (file) => {
    const before = answers.length;
    client.stdin.write(`${file}\n`);
    while (answers.length === before) await new Promise((resolve) => (waiting = resolve));
    return answers[answers.length - 1];
  };

  process.stdout.write(`node ${process.version}, ${runs} runs each; worst of the runs\n`);
  process.stdout.write(`${'body'.padEnd(32)} ${'size'.padStart(8)}  before: inline parse  after: longest event-loop delay  answer\n`);
  for (const [name, body] of bodies) {
    const file = join(dir, 'body.json');
    await writeFile(file, body);
    // As the server received it: 64 KiB chunks, concatenated, then parsed.
    const chunks = [];
    for (let at = 0; at < body.length; at += 65536) chunks.push(Buffer.from(body.subarray(at, at + 65536)));
    let inlineMs = 0;
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      decodeChatBody(Buffer.concat(chunks), 20 << 20);
      inlineMs = Math.max(inlineMs, performance.now() - start);
    }
    let worstMs = 0;
    let status;
    for (let i = 0; i < runs; i++) {
      const delay = monitorEventLoopDelay({ resolution: 1 });
      delay.enable();
      status = await send(file);
      delay.disable();
      worstMs = Math.max(worstMs, delay.max / 1e6);
    }
    process.stdout.write(`${name.padEnd(32)} ${`${(body.length / 1e6).toFixed(1)} MB`.padStart(8)}  ${`${inlineMs.toFixed(1)} ms`.padStart(20)}  ${`${worstMs.toFixed(1)} ms`.padStart(31)}  ${status}\n`);
  }
} finally {
  client?.kill();
  await server?.close({ timeoutMs: 1000 });
  await model?.dispose();
  await rm(dir, { recursive: true, force: true });
}
