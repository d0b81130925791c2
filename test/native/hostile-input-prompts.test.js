// Issue 6, "Bad input table" and "Misuse": prompts and options.
// Every input a user or a file can throw at the package gets a typed error with a stable `code`
// (or, for the odd-but-valid rows, the right picture), and the process lives on: every test here
// runs in this process, after the others. The other groups: test/native/hostile-input-*.test.js.
//
// Rows with a good test elsewhere are not repeated here:
//
// | row                                            | file                          | test
// |------------------------------------------------|-------------------------------|------------------------------------------------
// | prompt longer than the context (chat template) | test/native/session.test.js   | a prompt longer than the context is ERR_CONTEXT_OVERFLOW ...
// | NUL bytes in the prompt text                   | test/native/session.test.js   | text with NUL bytes is accepted
// | lone surrogate in the prompt text              | test/native/session.test.js   | stream options are validated by name, type and range
// | stream options: -1, NaN, out of range, top_p   | test/native/session.test.js   | stream options are validated by name, type and range
// | loadModel: threads 0, context_size, gpuLayers  | test/native/errors.test.js    | loadModel options are validated
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { rejectsWith } from '../assertions.js';
import { promisify } from 'node:util';
import { loadModel } from '../../dist/index.js';
import { collect, loadTinyModel, releaseTinyModel, root, testPixels } from '../helpers.js';

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

const greedy = (maxTokens) => ({ temperature: 0, maxTokens });

const raw = testPixels();
// ---------------------------------------------------------------------------------------------
// Prompts and options

test('a prompt whose image crosses the end of the context is ERR_CONTEXT_OVERFLOW, with template none too', async () => {
  const image = await model.encodeImage(fx.images.png);
  const session = model.createSession({ contextSize: 256, template: 'none' });
  // 'x ' is one token: 238 of them, BOS, then 16 image positions do not fit in 256.
  await rejectsWith(session.ask(['x '.repeat(238), image, 'y'], greedy(8)), 'ERR_CONTEXT_OVERFLOW', /needs 2\d\d positions but the context holds 256.*larger contextSize/);
  await rejectsWith(session.ask('x '.repeat(5000), greedy(8)), 'ERR_CONTEXT_OVERFLOW', /contextSize/);
  assert.equal(session.stats.contextUsed, 0);
  // Just fitting, it answers until the context is full, then stops (the documented truncation).
  const r = await collect(session.stream(['x '.repeat(230), image, 'y'], greedy(100)));
  assert.ok(r.tokens.length > 0 && r.tokens.length < 10, `${r.tokens.length} tokens`);
  assert.ok(session.stats.contextUsed <= 256);
  await session.reset();
  assert.equal((await collect(session.stream([image, 'hi'], greedy(4)))).tokens.length, 4);
  await session.dispose();
  await image.dispose();
});

test('NUL bytes pass through tokenize, the system prompt and stop strings', async () => {
  const ids = await model.tokenize('a\u0000b');
  assert.ok(ids.length >= 3);
  assert.equal(await model.detokenize(ids), 'a\u0000b');
  const session = model.createSession({ systemPrompt: 'sys\u0000tem' });
  const r = await collect(session.stream('a\u0000b', { ...greedy(4), stop: ['\u0000'] }));
  assert.equal(r.tokens.length, 4);
  await session.dispose();
});

test('lone surrogates are ERR_INVALID_ARGUMENT wherever text goes in', async () => {
  for (const bad of ['\uD800', 'x\uDC00y', 'end\uDBFF']) {
    await rejectsWith(model.tokenize(bad), 'ERR_INVALID_ARGUMENT', /lone UTF-16 surrogate.*well-formed/, 'tokenize');
    assert.throws(() => model.createSession({ systemPrompt: bad }), { code: 'ERR_INVALID_ARGUMENT', message: /systemPrompt contains a lone/ });
    const session = model.createSession();
    await rejectsWith(session.ask([raw, bad]), 'ERR_INVALID_ARGUMENT', /content\[1\] contains a lone/);
    await rejectsWith(session.ask('fine', { stop: ['ok', bad] }), 'ERR_INVALID_ARGUMENT', /stop\[1\] contains a lone/);
    assert.equal(session.stats.promptTokens, 0);
    await session.dispose();
  }
  // A well-formed pair is fine.
  assert.ok((await model.tokenize('\uD83D\uDE00')).length > 0);
});

test('negative, NaN, infinite and fractional numbers are ERR_INVALID_ARGUMENT everywhere', async () => {
  const bads = [-1, Number.NaN, Infinity, -Infinity, 1.5];
  const loadNumbers = { threads: [0, ...bads], contextSize: [0, ...bads], gpuLayers: [...bads] };
  for (const [key, values] of Object.entries(loadNumbers))
    for (const value of values) await rejectsWith(loadModel({ model: fx.model, [key]: value }), 'ERR_INVALID_ARGUMENT', new RegExp(key), `${key} ${value}`);
  for (const key of ['contextSize', 'threads', 'batchSize'])
    for (const value of bads) assert.throws(() => model.createSession({ [key]: value }), { code: 'ERR_INVALID_ARGUMENT', message: new RegExp(key) }, `${key} ${value}`);
  const session = model.createSession();
  const streamNumbers = ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'seed'];
  for (const key of streamNumbers)
    for (const value of [Number.NaN, -1, -Infinity, Infinity])
      await rejectsWith(session.ask('x', { [key]: value }), 'ERR_INVALID_ARGUMENT', new RegExp(key), `${key} ${value}`);
  for (const key of ['maxTokens', 'topK', 'seed']) await rejectsWith(session.ask('x', { [key]: 2.5 }), 'ERR_INVALID_ARGUMENT', new RegExp(key));
  assert.equal(session.stats.promptTokens, 0);
  for (const background of [{ r: -1, g: 0, b: 0 }, { r: 0, g: Number.NaN, b: 0 }, { r: 0, g: 0, b: 256 }, { r: 0, g: 0 }])
    await rejectsWith(model.encodeImage(raw, { background }), 'ERR_INVALID_ARGUMENT', /background/);
  for (const ids of [[Number.NaN], [1.5], [Infinity]]) await rejectsWith(model.detokenize(ids), 'ERR_INVALID_ARGUMENT', /tokens/, String(ids));
  for (const ids of [[-1], [model.info.vocabularySize]]) await rejectsWith(model.detokenize(ids), 'ERR_INVALID_ARGUMENT', undefined, String(ids));
  assert.equal((await collect(session.stream('still here', greedy(2)))).tokens.length, 2);
  await session.dispose();
});

test('unknown option names: a runtime ERR_INVALID_ARGUMENT with a hint, and a TypeScript error', async () => {
  await rejectsWith(loadModel({ model: fx.model, gpu_layers: 1 }), 'ERR_INVALID_ARGUMENT', /Unknown option "gpu_layers" in loadModel options; did you mean "gpuLayers"\?/);
  assert.throws(() => model.createSession({ system_prompt: 'x' }), { code: 'ERR_INVALID_ARGUMENT', message: /did you mean "systemPrompt"/ });
  assert.throws(() => model.createSession({ temperature: 0 }), { code: 'ERR_INVALID_ARGUMENT', message: /Unknown option "temperature" in createSession options; known options: contextSize/ });
  await rejectsWith(model.encodeImage(raw, { max_pixels: 10 }), 'ERR_INVALID_ARGUMENT', /did you mean "maxPixels"/);
  await rejectsWith(model.tokenize('x', { add_bos: true }), 'ERR_INVALID_ARGUMENT', /did you mean "addBos"/);
  await rejectsWith(model.detokenize([1], { Special: true }), 'ERR_INVALID_ARGUMENT', /Unknown option "Special"/);
  const session = model.createSession();
  await rejectsWith(session.ask('x', { max_tokens: 4 }), 'ERR_INVALID_ARGUMENT', /did you mean "maxTokens"/);
  await rejectsWith(session.ask('x', { maxTokens: 4, typicalP: 1 }), 'ERR_INVALID_ARGUMENT', /Unknown option "typicalP"/);
  await session.dispose();

  // The published types reject the same names at compile time (excess property checks).
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-types-'));
  try {
    const index = join(root, 'dist', 'index.js').replace(/\\/g, '/');
    const uses = [
      "await loadModel({ model: 'm.gguf', gpu_layers: 1 });",
      'model.createSession({ system_prompt: "x" });',
      "await model.encodeImage('x.png', { max_pixels: 10 });",
      "await model.tokenize('x', { add_bos: true });",
      "await session.ask('x', { top_p: 0.5 });",
      "for await (const _ of session.stream('x', { max_tokens: 1 }));",
    ];
    const source = (expectError) =>
      `import { loadModel, type Model, type Session } from '${index}';\n` +
      'export async function f(model: Model, session: Session) {\n' +
      "  await loadModel({ model: 'm.gguf', gpuLayers: 1 }); model.createSession({ systemPrompt: 'x' }); await session.ask('x', { topP: 0.5 });\n" +
      uses.map((u) => (expectError ? `  // @ts-expect-error unknown option\n  ${u}` : `  ${u}`)).join('\n') +
      '\n}\n';
    await writeFile(join(dir, 'expect.ts'), source(true));
    await writeFile(join(dir, 'plain.ts'), source(false));
    const tsc = (file) =>
      promisify(execFile)(process.execPath, [
        join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext',
        '--target', 'es2022', '--lib', 'es2023,esnext.disposable', '--types', 'node', '--typeRoots', join(root, 'node_modules', '@types'), join(dir, file),
      ]).then(() => '', (err) => err.stdout);
    assert.equal(await tsc('expect.ts'), '', 'each @ts-expect-error is used: the names are type errors');
    const errors = (await tsc('plain.ts')).split('\n').filter((l) => /error TS2561|error TS2353/.test(l));
    assert.equal(errors.length, uses.length, errors.join('\n'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
