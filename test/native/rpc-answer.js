// Child of rpc.test.js: loads the model as asked (argv[2], JSON options), answers a text and an
// image prompt greedily, and prints the answers as one JSON line. Run with MINIGPT_LOG=info so
// that llama.cpp's own report of where the weights went reaches stderr.
import { readFile } from 'node:fs/promises';
import { loadModel } from '../../dist/index.js';

const { options, image, before } = JSON.parse(process.argv[2]);
if (before) {
  // A model loaded and let go first, in this same process.
  await (await loadModel({ threads: 1, ...before })).dispose();
  process.stderr.write('\n=== the model under test ===\n');
}
const model = await loadModel({ threads: 1, ...options });
const greedy = { temperature: 0, maxTokens: 16 };
const text = await model.createSession().ask('Say something about the sea.', greedy);
const pictured = await model.createSession().ask([await readFile(image), 'What is here?'], greedy);
process.stdout.write(`${JSON.stringify({ text, pictured, gpuLayers: model.info.gpuLayers })}\n`);
await model.dispose();
