// Every input form of the same pixels gives the same embedding; orientation and alpha.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { decodeImage, loadModel } from '../../dist/index.js';
import { loadTinyModel, releaseTinyModel } from '../helpers.js';

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

async function floats(input) {
  const e = await model.encodeImage(input);
  const f = e.toFloat32Array();
  await e.dispose();
  return f;
}

test('path, Buffer, Uint8Array, raw pixels, sharp instance, WebP and TIFF give the same embedding', async () => {
  const { raw, png } = fx.images;
  const reference = await floats(png);
  assert.equal(reference.length, 16 * 64);
  assert.ok(reference.some((v) => v !== 0));
  const bytes = await readFile(png);
  const forms = {
    buffer: bytes,
    uint8array: new Uint8Array(bytes),
    raw,
    sharp: sharp(png),
    webpLossless: await sharp(png).webp({ lossless: true }).toBuffer(),
    tiff: await sharp(png).tiff({ compression: 'lzw' }).toBuffer(),
    rgba: { data: await sharp(png).ensureAlpha(1).raw().toBuffer(), width: raw.width, height: raw.height, channels: 4 },
  };
  for (const [name, input] of Object.entries(forms)) assert.deepEqual(await floats(input), reference, name);
});

test('a different picture gives a different embedding', async () => {
  assert.notDeepEqual(await floats(fx.images.pngOther), await floats(fx.images.png));
});

test('EXIF orientation is applied', async () => {
  const { raw } = fx.images;
  const meanDiff = (a) => {
    let diff = 0;
    for (let i = 0; i < raw.data.length; i++) diff += Math.abs(a[i] - raw.data[i]);
    return diff / raw.data.length;
  };
  // Stored turned 90° clockwise and tagged "turn 90° anticlockwise to display" (orientation 8),
  // or turned anticlockwise and tagged 6: displayed upright, both are the original picture.
  for (const [angle, orientation] of [[90, 8], [270, 6]]) {
    const stored = sharp(raw.data, { raw: { width: raw.width, height: raw.height, channels: 3 } }).rotate(angle);
    const storedPng = await stored.png().toBuffer();
    const png = await sharp(storedPng).withMetadata({ orientation }).png().toBuffer();
    const jpeg = await sharp(storedPng).withMetadata({ orientation }).jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).toBuffer();
    assert.equal((await sharp(jpeg).metadata()).orientation, orientation);
    const fromPng = await decodeImage(png);
    assert.deepEqual([fromPng.width, fromPng.height], [raw.width, raw.height]);
    assert.equal(meanDiff(fromPng.data), 0, `png, orientation ${orientation}`);
    assert.ok(meanDiff((await decodeImage(jpeg)).data) < 2, `jpeg, orientation ${orientation}`);
    // Orientation comes before a resize (here to the upright size, so nothing else changes).
    assert.equal(meanDiff((await decodeImage(png, { resize: { width: raw.width, height: raw.height } })).data), 0, `png resized, orientation ${orientation}`);
  }
});

test('alpha is flattened onto white; grey images become RGB', async () => {
  const transparent = { data: new Uint8Array([0, 0, 0, 0, 255, 0, 0, 255]), width: 2, height: 1, channels: 4 };
  const d = await decodeImage(transparent);
  assert.deepEqual(Array.from(d.data), [255, 255, 255, 255, 0, 0]);
  const grey = await decodeImage({ data: new Uint8Array([10, 200]), width: 2, height: 1, channels: 1 });
  assert.deepEqual(Array.from(grey.data), [10, 10, 10, 200, 200, 200]);
});

test('bad images reject with typed errors', async () => {
  await assert.rejects(model.encodeImage(join(fx.dir, 'missing.png')), { code: 'ERR_IMAGE_DECODE' });
  await assert.rejects(model.encodeImage(fx.dir), { code: 'ERR_IMAGE_DECODE' });
  await assert.rejects(model.encodeImage(Buffer.alloc(0)), { code: 'ERR_IMAGE_DECODE' });
  await assert.rejects(model.encodeImage(Buffer.from('this is not an image at all')), { code: 'ERR_IMAGE_DECODE' });
  await assert.rejects(model.encodeImage(fx.model), { code: 'ERR_IMAGE_DECODE' });
  const png = await readFile(fx.images.png);
  await assert.rejects(model.encodeImage(png.subarray(0, png.length / 2)), { code: 'ERR_IMAGE_DECODE' });
  await assert.rejects(model.encodeImage({ data: new Uint8Array(10), width: 4, height: 4, channels: 3 }), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(model.encodeImage(png, { maxPixels: 100 }), /maxPixels/);
  await assert.rejects(model.encodeImage(42), { code: 'ERR_INVALID_ARGUMENT' });
});

test('encodeImage without a projector is ERR_NO_PROJECTOR', async () => {
  const textOnly = await loadModel({ model: fx.model });
  await assert.rejects(textOnly.encodeImage(fx.images.png), { code: 'ERR_NO_PROJECTOR' });
  assert.equal(textOnly.info.hasVision, false);
  await textOnly.dispose();
});
