// Child process of workers.test.js: N rounds of a worker that loads a model, encodes an image,
// starts streaming and is terminated; prints RSS and malloc's bytes in use after the warm-up
// and after the rounds.
import { Worker } from 'node:worker_threads';
import { binding } from '../../dist/native/binding.js';
import { mallocInUse } from '../../scripts/leak-check.mjs';

const [modelPath, projector, image, warmup, rounds] = process.argv.slice(2);
const script = new URL('./worker-stream.js', import.meta.url);

async function round() {
  const worker = new Worker(script, { workerData: { model: modelPath, projector, image, prompt: 'Hi', maxTokens: 100000 } });
  worker.on('error', () => {});
  await new Promise((resolve) => worker.on('message', (m) => m.type === 'piece' && resolve()));
  await worker.terminate();
}

const heap = () => mallocInUse(binding());
for (let i = 0; i < Number(warmup); i++) await round();
const baseline = process.memoryUsage().rss, heapBaseline = heap();
for (let i = 0; i < Number(rounds); i++) await round();
process.stdout.write(JSON.stringify({ baseline, after: process.memoryUsage().rss, heapBaseline, heapAfter: heap() }) + '\n');
