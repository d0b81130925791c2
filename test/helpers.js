// Shared by the native tests: temp dirs with tiny fixture models, test images, and the
// llama.cpp oracles built from the same source (build/oracles, made by `npm install`).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { loadModel } from '../dist/index.js';
import { writeTinyLlama, writeTinyMmproj } from '../tools/fixtures/models.js';
import { testPixels } from '../tools/fixtures/pixels.js';

const run = promisify(execFile);
export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const oracleDir = join(root, 'build', 'oracles');
export const oracles = {
  tokenize: join(oracleDir, 'llama-tokenize'),
  greedy: join(oracleDir, 'minigpt-oracle'),
};
export const oraclesBuilt = existsSync(oracles.tokenize) && existsSync(oracles.greedy);

export { testPixels };

/** A temp dir holding a tiny LLM (ChatML), a matching mmproj and a few images. */
export async function makeFixtures(options = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-test-'));
  const model = join(dir, 'tiny-llama.gguf');
  const projector = join(dir, 'tiny-mmproj.gguf');
  await writeTinyLlama(model, options.llama);
  await writeTinyMmproj(projector, { nEmbdText: 64, ...options.mmproj });
  const images = await writeImages(dir);
  return { dir, model, projector, images, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The set-up most native tests share: the tiny fixtures, loaded with their projector on 2 threads. */
export async function loadTinyModel() {
  const fx = await makeFixtures();
  try {
    return { fx, model: await loadModel({ model: fx.model, projector: fx.projector, threads: 2 }) };
  } catch (err) {
    await fx.cleanup();
    throw err;
  }
}

/** Undoes {@link loadTinyModel}; either part may be missing when the set-up failed. */
export async function releaseTinyModel({ fx, model }) {
  await model?.dispose();
  await fx?.cleanup();
}

/** An HTTP response read whole: status, headers, text, and the text as JSON when it is JSON. */
export function readResponse(res) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('error', reject);
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      let json;
      try {
        json = JSON.parse(text);
      } catch {}
      resolve({ status: res.statusCode, headers: res.headers, json, text });
    });
  });
}

async function writeImages(dir) {
  const raw = testPixels();
  const rawOther = testPixels(40, 30, 1);
  const png = join(dir, 'picture.png');
  const pngOther = join(dir, 'other.png');
  const rgbFile = join(dir, 'picture.rgb');
  const rgbOtherFile = join(dir, 'other.rgb');
  const opts = { raw: { width: raw.width, height: raw.height, channels: 3 } };
  await sharp(raw.data, opts).png().toFile(png);
  await sharp(rawOther.data, opts).png().toFile(pngOther);
  await writeFile(rgbFile, raw.data);
  await writeFile(rgbOtherFile, rawOther.data);
  const pngBytes = await readFile(png);
  return { raw, rawOther, png, pngOther, pngBytes, rgbFile, rgbOtherFile };
}

/** Token ids from llama.cpp's own llama-tokenize. */
export async function llamaTokenize(model, text, { bos = false, special = true } = {}) {
  const args = ['-m', model, '-p', text, '--ids', '--log-disable'];
  if (!bos) args.push('--no-bos');
  if (!special) args.push('--no-parse-special');
  const { stdout } = await run(oracles.tokenize, args, { maxBuffer: 1 << 24 });
  const line = stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

/** Greedy token ids from llama.cpp + libmtmd's own helpers (test/oracle/mtmd_greedy.cpp). */
export async function oracleGreedy({ model, projector, image, prompt, chat = true, system, n = 24, threads = 2 }) {
  const args = ['--model', model, '--prompt', prompt, '-n', String(n), '--threads', String(threads)];
  if (chat) args.push('--chat');
  if (system) args.push('--system', system);
  if (projector) args.push('--mmproj', projector, '--rgb', image.file, '--width', String(image.width), '--height', String(image.height));
  const { stdout } = await run(oracles.greedy, args, { maxBuffer: 1 << 24 });
  const line = stdout.trim();
  return line ? line.split(' ').map(Number) : [];
}

/** Collects a stream's token ids and text. */
export async function collect(stream) {
  const tokens = [];
  let text = '';
  for await (const piece of stream) {
    if (piece.token >= 0) tokens.push(piece.token);
    text += piece.text;
  }
  return { tokens, text };
}

/** Samples event-loop lag with a 10 ms interval while `work` runs; returns the worst lag in ms. */
export async function maxEventLoopLag(work) {
  let worst = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 10);
    last = now;
  }, 10);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return worst;
}
