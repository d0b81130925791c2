// Child process of long-run.test.js: one greedy stream of N tokens with no stop on a tiny model
// with a large context; samples RSS (after a GC) every `every` tokens and prints the samples as JSON.
import { loadModel } from '../../dist/index.js';

const [modelPath, n, contextSize, every = '250'] = process.argv.slice(2);
const model = await loadModel({ model: modelPath, threads: 1 });
const session = model.createSession({ contextSize: Number(contextSize) });
const samples = [];
let count = 0;
const t0 = performance.now();
for await (const piece of session.stream('Tell me a very long story.', { temperature: 0, maxTokens: Number(n) })) {
  if (piece.token >= 0) count++;
  if (count % Number(every) === 0) {
    globalThis.gc?.();  // run with --expose-gc: JS garbage (pieces, strings) would swamp the signal
    { const u = process.memoryUsage(); samples.push([count, u.rss, u.heapUsed, u.heapTotal]); }
  }
}
const ms = performance.now() - t0;
const { stats } = session;
await model.dispose();
process.stdout.write(JSON.stringify({ count, ms, samples, contextUsed: stats.contextUsed, contextSize: stats.contextSize }) + '\n');
