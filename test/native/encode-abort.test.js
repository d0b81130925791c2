// Aborting encodeImage stops the encoder within one layer (libmtmd's CLIP through clip's
// scheduler callback, our BLIP-2 graph through ggml's CPU abort callback), rejects with
// ERR_ABORTED, and leaves nothing half-done: the next encode of the same picture is exactly an
// uninterrupted one's, and a generation with it answers the same.
//
// The projectors are written at test time, large enough that an encode takes over a second on
// a 2-core AVX-512 machine (12 layers of width 384 at 768 px / 504 px: 2304 and 1296 patches,
// about 50 MB each in f16). The abort comes at 30% of a whole encode's time: past decoding and
// preprocessing, in the middle of the encoder.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { writeTinyLlama, writeTinyMmproj } from '../../tools/fixtures/models.js';
import { collect, testPixels } from '../helpers.js';

const LAYERS = 12;
const KINDS = {
  clip: {
    write: (path) => writeTinyMmproj(path, {
      imageSize: 768, patchSize: 16, nEmbd: 384, nLayer: LAYERS, nHead: 6, nFf: 1536, hidden: 256, nEmbdText: 64, type: 'f16',
    }),
    imageSize: 768,
  },
  blip2: {
    write: (path) => writeTinyBlip2(path, {
      imageSize: 504, patchSize: 14, nEmbd: 384, nLayer: LAYERS, nHead: 6, nFf: 1536,
      qfHidden: 256, qfLayers: 4, qfHeads: 4, qfFf: 512, nQuery: 32, nEmbdText: 64, type: 'f16',
    }),
    imageSize: 504,
  },
};
const greedy = { temperature: 0, maxTokens: 8 };

let dir, llm;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-encode-abort-'));
  llm = join(dir, 'llm.gguf');
  await writeTinyLlama(llm, { nCtx: 4096 });  // the CLIP image alone is 2304 positions
  for (const [kind, k] of Object.entries(KINDS)) {
    k.path = join(dir, `${kind}.gguf`);
    await k.write(k.path);
  }
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function timedEncode(model, pixels, options) {
  const t0 = performance.now();
  const e = await model.encodeImage(pixels, options);
  return { embedding: e, ms: performance.now() - t0 };
}

async function answer(model, embedding) {
  const session = model.createSession({ template: 'none', contextSize: 4096 });
  try {
    return (await collect(session.stream(['Picture:', embedding, 'says'], greedy))).tokens;
  } finally {
    await session.dispose();
  }
}

for (const kind of Object.keys(KINDS)) {
  test(`${kind}: an abort stops the encoder within a layer, and the next encode is whole`, { timeout: 180_000 }, async (t) => {
    const { path, imageSize } = KINDS[kind];
    const model = await loadModel({ model: llm, projector: path, threads: 2 });
    try {
      const pixels = testPixels(imageSize, imageSize);
      // Two uninterrupted encodes: the reference output, and the time a whole encode takes now
      // (the faster of the two, so a slow moment of a shared machine cannot loosen the bound).
      const first = await timedEncode(model, pixels);
      const second = await timedEncode(model, pixels);
      const reference = first.embedding.toFloat32Array();
      assert.deepEqual(second.embedding.toFloat32Array(), reference, 'uninterrupted encodes agree');
      const referenceAnswer = await answer(model, first.embedding);
      assert.equal(referenceAnswer.length, greedy.maxTokens);
      await first.embedding.dispose();
      await second.embedding.dispose();
      const full = Math.min(first.ms, second.ms);
      assert.ok(full > 300, `a whole encode takes ${full.toFixed(0)} ms: too short to abort in its middle`);
      const abortAfter = full * 0.3;

      const controller = new AbortController();
      let abortedAt = 0;
      const timer = setTimeout(() => {
        abortedAt = performance.now();
        controller.abort(new Error('user closed the window'));
      }, abortAfter);
      const start = performance.now();
      let err;
      try {
        (await model.encodeImage(pixels, { signal: controller.signal })).dispose();
      } catch (e) {
        err = e;
      } finally {
        clearTimeout(timer);
      }
      const ended = performance.now();
      assert.ok(err, `the encode finished in ${(ended - start).toFixed(0)} ms although aborted after ${abortAfter.toFixed(0)} ms`);
      assert.equal(err.code, 'ERR_ABORTED');
      assert.equal(err.name, 'AbortError');
      assert.equal(err.cause?.message, 'user closed the window');
      // Within a layer (1/12 of the encoder), plus margin for a shared machine: without the
      // abort reaching native code this is the rest of the encode, about 70% of `full`.
      const latency = ended - abortedAt;
      const bound = full * 0.3 + 200;
      t.diagnostic(`${kind}: whole encode ${first.ms.toFixed(0)} / ${second.ms.toFixed(0)} ms, aborted after ${(abortedAt - start).toFixed(0)} ms, rejected ${latency.toFixed(0)} ms later (bound ${bound.toFixed(0)} ms)`);
      assert.ok(latency < bound, `rejected ${latency.toFixed(0)} ms after the abort; a whole encode takes ${full.toFixed(0)} ms`);

      // Nothing of the stopped encode is left behind.
      const again = await model.encodeImage(pixels);
      assert.deepEqual(again.toFloat32Array(), reference);
      assert.deepEqual(await answer(model, again), referenceAnswer);
      await again.dispose();
    } finally {
      await model.dispose();
    }
  });
}
