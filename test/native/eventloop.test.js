// Nothing slow runs on the JS thread: a 10 ms interval keeps ticking while a model loads,
// an image encodes and a stream runs. The model is large enough that doing any of these on
// the JS thread would stall the interval far beyond the bound (the projector's 16 layers take
// 75 ms to encode on 2 threads of a 2026 EPYC core; 6 layers once took 28, under the bound).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { writeTinyLlama, writeTinyMmproj } from '../../tools/fixtures/models.js';
import { makeFixtures, maxEventLoopLag } from '../helpers.js';

const LAG_BOUND_MS = 40;
let fx, bigModel, bigProjector;
before(async () => {
  fx = await makeFixtures();
  bigModel = join(fx.dir, 'mid-llama.gguf');
  bigProjector = join(fx.dir, 'mid-mmproj.gguf');
  await writeTinyLlama(bigModel, { nEmbd: 512, nLayer: 8, nHead: 8, nHeadKv: 8, nFf: 1408 });
  await writeTinyMmproj(bigProjector, { nEmbdText: 512, imageSize: 224, patchSize: 14, nEmbd: 384, nFf: 1536, nLayer: 16, nHead: 6 });
});
after(async () => {
  await fx?.cleanup();
});

async function timed(work) {
  const start = performance.now();
  let result;
  const lag = await maxEventLoopLag(async () => {
    result = await work();
  });
  return { lag, ms: performance.now() - start, result };
}

test('the event loop keeps ticking during load, encode and stream', async (t) => {
  const load = await timed(() => loadModel({ model: bigModel, projector: bigProjector, threads: 2, useMmap: false }));
  const model = load.result;
  try {
    const encode = await timed(() => model.encodeImage(fx.images.png));
    const session = model.createSession();
    const stream = await timed(async () => {
      for await (const _ of session.stream([encode.result, 'word '.repeat(150)], { temperature: 0, maxTokens: 48 }));
    });
    for (const [name, r] of Object.entries({ load, encode, stream })) {
      t.diagnostic(`${name}: ${r.ms.toFixed(0)} ms, worst event-loop lag ${r.lag.toFixed(1)} ms`);
      assert.ok(r.lag < LAG_BOUND_MS, `${name}: event loop stalled ${r.lag.toFixed(1)} ms (took ${r.ms.toFixed(0)} ms)`);
    }
    // The bound means something only if each piece of work takes longer than the bound:
    // done on the JS thread, it would stall the interval for its whole duration.
    for (const [name, r] of Object.entries({ load, encode, stream })) assert.ok(r.ms > LAG_BOUND_MS, `${name} took only ${r.ms.toFixed(0)} ms`);
  } finally {
    await model.dispose();
  }
});
