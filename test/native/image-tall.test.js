// Pictures with a side over 65535 pixels: libmtmd resizes them like any other, and BLIP-2's
// path squashes them in JS first; nothing in between may refuse them with a false reason.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { loadModel } from '../../dist/index.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { collect, makeFixtures, oracleGreedy, oraclesBuilt } from '../helpers.js';

const skip = !oraclesBuilt && 'llama.cpp oracles not built (npm install builds them)';
const W = 1, H = 100_000;
let fx, png, rgb, rgbFile;
before(async () => {
  fx = await makeFixtures();
  rgb = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    rgb[y * 3] = (y * 7) & 255;
    rgb[y * 3 + 1] = (y >> 8) & 255;
    rgb[y * 3 + 2] = y % 3000 < 1500 ? 220 : 30;
  }
  png = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toBuffer();
  rgbFile = join(fx.dir, 'tall.rgb');
  await writeFile(rgbFile, rgb);
});
after(async () => {
  await fx?.cleanup();
});

test('a 1x100000 PNG encodes with an mmproj, as llama.cpp encodes it', { skip }, async () => {
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.width, meta.height], [W, H]);
  const model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  try {
    const image = await model.encodeImage(png);
    assert.equal(image.nTokens, 16);
    const session = model.createSession();
    const prompt = 'What is in this picture?';
    const ours = await collect(session.stream([image, prompt], { temperature: 0, maxTokens: 16 }));
    const theirs = await oracleGreedy({
      model: fx.model, projector: fx.projector, prompt: `<__media__>${prompt}`, n: 16, image: { file: rgbFile, width: W, height: H },
    });
    assert.ok(theirs.length > 0);
    assert.deepEqual(ours.tokens, theirs);
    await session.dispose();
  } finally {
    await model.dispose();
  }
});

test('a 1x100000 PNG encodes with a BLIP-2 projector', async () => {
  const blip2 = join(fx.dir, 'blip2.gguf');
  await writeTinyBlip2(blip2, { nEmbdText: 64 });
  const model = await loadModel({ model: fx.model, projector: blip2, threads: 2 });
  try {
    const image = await model.encodeImage(png);
    assert.ok(image.nTokens > 0);
    assert.ok(image.toFloat32Array().every(Number.isFinite));
  } finally {
    await model.dispose();
  }
});
