// quantize(): llama.cpp's own quantizer from the addon, against build/oracles/llama-quantize
// built from the same source (byte for byte), with progress, abort and the typed refusals.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile, truncate, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { quantize, QUANTIZE_TYPES } from '../../dist/index.js';
import { oracleDir } from '../helpers.js';
import { writeTinyLlama } from '../../tools/fixtures/models.js';

const run = promisify(execFile);
const LLAMA_QUANTIZE = join(oracleDir, 'llama-quantize');
const NO_ORACLE = existsSync(LLAMA_QUANTIZE) ? undefined : `${LLAMA_QUANTIZE} is missing (npm install builds it)`;

let dir;
let model; // f16, rows of 256 so the K and IQ types apply to every matrix
let big; // more tensors, for abort
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-quantize-'));
  model = join(dir, 'tiny-f16.gguf');
  await writeTinyLlama(model, { nEmbd: 256, nFf: 512, nHead: 4, nHeadKv: 2, type: 'f16' });
  big = join(dir, 'big-f16.gguf');
  await writeTinyLlama(big, { nEmbd: 256, nFf: 1024, nLayer: 12, nHead: 4, nHeadKv: 2, type: 'f16', seed: 2 });
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

async function rejectsWith(promise, code, re) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (re) assert.match(err.message, re);
    return true;
  });
}

for (const type of ['Q4_K_M', 'Q8_0', 'IQ4_NL', 'IQ4_XS']) {
  test(`${type} equals llama-quantize byte for byte`, { skip: NO_ORACLE }, async () => {
    const ours = join(dir, `ours-${type}.gguf`);
    const theirs = join(dir, `theirs-${type}.gguf`);
    const progress = [];
    const r = await quantize({ input: model, output: ours, type: type.toLowerCase(), threads: 2, onProgress: (p) => progress.push(p) });
    await run(LLAMA_QUANTIZE, [model, theirs, type, '2']);
    const [a, b] = [await readFile(ours), await readFile(theirs)];
    assert.ok(a.equals(b), `${type}: ${a.length} vs ${b.length} bytes, first difference at ${a.findIndex((v, i) => v !== b[i])}`);
    assert.equal(r.type, type);
    assert.equal(r.bytes, b.length);
    assert.ok(progress.length >= 3, `progress ${progress}`);
    assert.ok(progress.every((p, i) => i === 0 || p > progress[i - 1]), `not increasing: ${progress}`);
    assert.equal(progress.at(-1), 1);
    assert.ok(!(await readdir(dir)).some((f) => f.endsWith('.part')));
  });
}

test('abort stops it within a tensor or so and leaves no file', async () => {
  const out = join(dir, 'aborted.gguf');
  const ac = new AbortController();
  const seen = [];
  await rejectsWith(quantize({ input: big, output: out, type: 'IQ4_NL', threads: 1, signal: ac.signal, onProgress: (p) => { seen.push(p); if (p > 0) ac.abort(); } }), 'ERR_ABORTED');
  assert.ok(Math.max(...seen) < 0.5, `it went on to ${Math.max(...seen)}`);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('aborted')), []);
  // an already-aborted signal rejects before any work
  await rejectsWith(quantize({ input: big, output: out, type: 'Q8_0', signal: AbortSignal.abort() }), 'ERR_ABORTED');
});

test('a throwing onProgress aborts, with the error as cause', async () => {
  const boom = new Error('boom');
  await assert.rejects(quantize({ input: big, output: join(dir, 'boom.gguf'), type: 'Q8_0', onProgress: () => { throw boom; } }),
    (err) => err.code === 'ERR_ABORTED' && err.cause === boom);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('boom')), []);
});

test('refusals: unknown type (listing the valid ones), imatrix types, same file, not a GGUF, a truncated GGUF', async () => {
  const out = join(dir, 'x.gguf');
  await rejectsWith(quantize({ input: model, output: out, type: 'Q4_K_X' }), 'ERR_INVALID_ARGUMENT', /one of Q1_0, .*Q4_K_M.*COPY/);
  await rejectsWith(quantize({ input: model, output: out, type: 'IQ2_XXS' }), 'ERR_INVALID_ARGUMENT', /importance matrix/);
  await rejectsWith(quantize({ input: model, output: model, type: 'Q8_0' }), 'ERR_INVALID_ARGUMENT', /is the input/);
  await rejectsWith(quantize({ input: model, output: out, type: 'Q8_0', threads: 0 }), 'ERR_INVALID_ARGUMENT', /threads/);
  await rejectsWith(quantize({ input: model, output: out, type: 'Q8_0', extra: 1 }), 'ERR_INVALID_ARGUMENT', /extra/);
  await rejectsWith(quantize({ input: join(dir, 'nope.gguf'), output: out, type: 'Q8_0' }), 'ERR_MODEL_LOAD', /nope\.gguf/);
  const notGguf = join(dir, 'not.gguf');
  await writeFile(notGguf, 'hello world');
  await rejectsWith(quantize({ input: notGguf, output: out, type: 'Q8_0' }), 'ERR_MODEL_LOAD', /not a GGUF/);
  const cut = join(dir, 'cut.gguf');
  await copyFile(model, cut);
  await truncate(cut, 40000);
  await rejectsWith(quantize({ input: cut, output: out, type: 'Q8_0' }), 'ERR_MODEL_LOAD', /truncated/);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('x.gguf')), []);
  assert.ok(Object.keys(QUANTIZE_TYPES).includes('Q4_K_M'));
});
