// The fuzz child: loads inputs one at a time through the public API and says how each ended.
// A typed MinigptError is a pass; any other error is reported; a crash kills this process,
// and the parent, which knows which input was in flight, blames that input and starts a new
// child. Protocol: one JSON line per case on stdin ({ id, kind, file }); one line per answer
// on stdout, prefixed so llama.cpp's own output cannot be mistaken for it.
//
// Usage: node tools/fuzz/worker.js '{"llm": path, "mmproj": path, "blip2": path, "png": path}'

import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { loadModel, MinigptError } from '../../dist/index.js';

const PREFIX = '@@fuzz ';
const good = JSON.parse(process.argv[2]);
const say = (message) => process.stdout.write(PREFIX + JSON.stringify(message) + '\n');

// A model that loaded is used too: some files load fine and fail only when run.
async function exercise(model) {
  await model.detokenize(await model.tokenize('Hello world', { addBos: true }));
  const session = model.createSession({ template: 'none', contextSize: 128 });
  const content = model.info.hasVision ? [await model.encodeImage(good.png), 'hi'] : 'Hello';
  await session.ask(content, { maxTokens: 2, temperature: 0 });
  await session.dispose();
}

async function llm(file) {
  const model = await loadModel({ model: file, threads: 1 });
  try {
    await exercise(model);
  } finally {
    await model.dispose();
  }
}

async function projector(file) {
  const model = await loadModel({ model: good.llm, projector: file, threads: 1 });
  try {
    await exercise(model);
  } finally {
    await model.dispose();
  }
}

// Images go through both kinds of projector: libmtmd's preprocessing and BLIP-2's resize.
let imageModels;
async function image(file, id) {
  imageModels ??= await Promise.all([
    loadModel({ model: good.llm, projector: good.mmproj, threads: 1 }),
    loadModel({ model: good.llm, projector: good.blip2, threads: 1 }),
  ]);
  const bytes = await readFile(file);
  const embedding = await imageModels[id % 2].encodeImage(bytes);
  await embedding.dispose();
}

const run = { llm, mmproj: projector, blip2: projector, image };

const lines = createInterface({ input: process.stdin });
say({ ready: true });
for await (const line of lines) {
  const { id, kind, file } = JSON.parse(line);
  try {
    await run[kind](file, id);
    say({ id, outcome: 'ok' });
  } catch (err) {
    if (err instanceof MinigptError && typeof err.code === 'string') say({ id, outcome: 'typed', code: err.code, message: err.message.slice(0, 300) });
    else say({ id, outcome: 'untyped', message: String(err?.stack ?? err).slice(0, 1000) });
  }
}
await Promise.all((imageModels ?? []).map((m) => m.dispose()));
