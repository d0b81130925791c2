// `minigpt describe` streams the same answer the API gives.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { loadModel } from '../../dist/index.js';
import { makeFixtures, root } from '../helpers.js';

const run = promisify(execFile);
const cli = join(root, 'dist', 'cli', 'index.js');
let fx;
before(async () => {
  fx = await makeFixtures();
});
after(async () => {
  await fx?.cleanup();
});

test('describe prints the greedy answer to stdout', async () => {
  const { stdout } = await run(process.execPath, [
    cli, 'describe', fx.images.png, '--model', fx.model, '--projector', fx.projector,
    '--prompt', 'What is this?', '--temperature', '0', '--max-tokens', '12', '--threads', '2',
  ]);
  const model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const image = await model.encodeImage(fx.images.png);
  const expected = await model.createSession().ask([image, 'What is this?'], { temperature: 0, maxTokens: 12 });
  await model.dispose();
  assert.ok(expected.length > 0);
  assert.equal(stdout, expected + '\n');
});

test('usage and errors', async () => {
  const help = await run(process.execPath, [cli, '--help']);
  assert.match(help.stderr, /minigpt describe <image>/);
  await assert.rejects(run(process.execPath, [cli, 'describe', fx.images.png]), (err) => err.code === 2);
  await assert.rejects(
    run(process.execPath, [cli, 'describe', fx.images.png, '--model', join(fx.dir, 'missing.gguf'), '--projector', fx.projector]),
    (err) => err.code === 1 && /ERR_MODEL_LOAD/.test(err.stderr) && /not found/.test(err.stderr),
  );
});
