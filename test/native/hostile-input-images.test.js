// Issue 6, "Bad input table" and "Misuse": images.
// Every input a user or a file can throw at the package gets a typed error with a stable `code`
// (or, for the odd-but-valid rows, the right picture), and the process lives on: every test here
// runs in this process, after the others. The other groups: test/native/hostile-input-*.test.js.
//
// Rows with a good test elsewhere are not repeated here:
//
// | row                                            | file                          | test
// |------------------------------------------------|-------------------------------|------------------------------------------------
// | image: 0 bytes, missing file, directory, text  | test/native/image.test.js     | bad images reject with typed errors
// | image: EXIF-rotated JPEG and PNG (6 and 8)     | test/native/image.test.js     | EXIF orientation is applied
// | image: raw pixels, buffer too short            | test/native/image.test.js     | bad images reject with typed errors
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { rejectsWith } from '../assertions.js';
import sharp from 'sharp';
import { decodeImage } from '../../dist/index.js';
import { makeRng } from '../../tools/fixtures/prng.js';
import { pngClaiming } from '../fixtures/hostile.js';
import { collect, loadTinyModel, releaseTinyModel, testPixels } from '../helpers.js';

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

const greedy = (maxTokens) => ({ temperature: 0, maxTokens });
let n = 0;
const tmp = (name) => join(fx.dir, `${n++}-${name}`);

// ---------------------------------------------------------------------------------------------
// Images

const raw = testPixels();
const rawOptions = { raw: { width: raw.width, height: raw.height, channels: 3 } };

/** Mean absolute difference of two RGB buffers of the same length. */
function meanDiff(a, b) {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d += Math.abs(a[i] - b[i]);
  return d / a.length;
}

async function floats(input, options) {
  const e = await model.encodeImage(input, options);
  const f = e.toFloat32Array();
  await e.dispose();
  return f;
}

test('JPEG, PNG and WebP truncated at every 10% of their length are ERR_IMAGE_DECODE', async () => {
  const files = {
    jpeg: await sharp(raw.data, rawOptions).jpeg().toBuffer(),
    png: await sharp(raw.data, rawOptions).png().toBuffer(),
    webp: await sharp(raw.data, rawOptions).webp().toBuffer(),
  };
  for (const [format, bytes] of Object.entries(files)) {
    assert.equal((await decodeImage(bytes)).width, raw.width, `whole ${format}`);
    for (let tenth = 1; tenth <= 9; tenth++) {
      const cut = bytes.subarray(0, Math.floor((bytes.length * tenth) / 10));
      await rejectsWith(model.encodeImage(cut), 'ERR_IMAGE_DECODE', /^Could not decode the image/, `${format} ${tenth}0%`);
    }
  }
});

test('random bytes, with and without an image signature, are ERR_IMAGE_DECODE', async () => {
  const random = (length, seed) => {
    const next = makeRng(seed).uniform;
    return Buffer.from(Array.from({ length }, () => Math.floor(next() * 256)));
  };
  const signatures = [[], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], [0xff, 0xd8, 0xff, 0xe0], [...Buffer.from('RIFF\0\0\0\0WEBPVP8 ')], [...Buffer.from('GIF89a')]];
  for (const [i, signature] of signatures.entries()) {
    const bytes = Buffer.concat([Buffer.from(signature), random(2000, i + 1)]);
    await rejectsWith(model.encodeImage(bytes), 'ERR_IMAGE_DECODE', /^Could not decode the image/, `signature ${i}`);
  }
});

test('a 1x1 image encodes to the projector\'s token count, the same from every form', async () => {
  const pixel = { data: new Uint8Array([200, 10, 30]), width: 1, height: 1, channels: 3 };
  const png = await sharp(pixel.data, { raw: { width: 1, height: 1, channels: 3 } }).png().toBuffer();
  const decoded = await decodeImage(png);
  assert.deepEqual([decoded.width, decoded.height, ...decoded.data], [1, 1, 200, 10, 30]);
  const fromRaw = await floats(pixel);
  assert.equal(fromRaw.length, 16 * 64);
  assert.ok(fromRaw.every(Number.isFinite));
  assert.deepEqual(await floats(png), fromRaw);
});

test('a PNG header claiming 30000x30000 is refused before decoding; maxPixels sets the limit', async () => {
  const liar = pngClaiming(30000, 30000);
  assert.ok(liar.length < 100);
  const start = performance.now();
  await rejectsWith(model.encodeImage(liar), 'ERR_IMAGE_DECODE', /30000x30000 \(900000000 pixels\), over the limit of maxPixels = 100000000.*refused before decoding.*larger maxPixels/);
  assert.ok(performance.now() - start < 1000, 'refused from the header, not after allocating 2.7 GB');
  // Without the limit the decoder gets it, and fails on the missing rows instead.
  await rejectsWith(decodeImage(liar, { maxPixels: Infinity }), 'ERR_IMAGE_DECODE', /^Could not decode the image/);

  // The limit is configurable, and applies to every input form.
  const png100 = await sharp({ create: { width: 100, height: 100, channels: 3, background: { r: 0, g: 128, b: 255 } } }).png().toBuffer();
  await rejectsWith(model.encodeImage(png100, { maxPixels: 9999 }), 'ERR_IMAGE_DECODE', /100x100 \(10000 pixels\), over the limit of maxPixels = 9999/);
  assert.equal((await model.encodeImage(png100, { maxPixels: 10000 })).nTokens, 16);
  await rejectsWith(model.encodeImage(raw, { maxPixels: 1199 }), 'ERR_IMAGE_DECODE', /40x30 \(1200 pixels\), over the limit of maxPixels = 1199/);
  await rejectsWith(model.encodeImage(sharp(png100), { maxPixels: 9999 }), 'ERR_IMAGE_DECODE', /100x100 \(10000 pixels\)/);
  const file = tmp('100.png');
  await writeFile(file, png100);
  await rejectsWith(model.encodeImage(file, { maxPixels: 9999 }), 'ERR_IMAGE_DECODE', /100x100/);
  for (const maxPixels of [0, -1, 1.5, Number.NaN, '1000']) {
    await rejectsWith(model.encodeImage(png100, { maxPixels }), 'ERR_INVALID_ARGUMENT', /maxPixels/, String(maxPixels));
  }
});

test('an animated GIF gives its first frame', async () => {
  const frame = (r, g, b) => Buffer.alloc(16 * 16 * 4).fill(Buffer.from([r, g, b, 255]));
  const gif = await sharp(Buffer.concat([frame(255, 0, 0), frame(0, 0, 255), frame(0, 255, 0)]), { raw: { width: 16, height: 48, channels: 4, pageHeight: 16 } })
    .gif({ loop: 0, delay: [100, 100, 100] })
    .toBuffer();
  assert.equal((await sharp(gif).metadata()).pages, 3);
  const decoded = await decodeImage(gif);
  assert.deepEqual([decoded.width, decoded.height], [16, 16]);
  for (let i = 0; i < decoded.data.length; i += 3) assert.deepEqual([...decoded.data.subarray(i, i + 3)], [255, 0, 0], `pixel ${i / 3}`);
  const red = { data: new Uint8Array(16 * 16 * 3).fill(0).map((_, i) => (i % 3 === 0 ? 255 : 0)), width: 16, height: 16, channels: 3 };
  assert.deepEqual(await floats(gif), await floats(red));
});

test('a CMYK JPEG is converted to the same RGB picture (within the CMYK gamut)', async () => {
  const cmyk = await sharp(raw.data, rawOptions).toColourspace('cmyk').jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).toBuffer();
  assert.equal((await sharp(cmyk).metadata()).space, 'cmyk');
  assert.equal((await sharp(cmyk).metadata()).channels, 4);
  const decoded = await decodeImage(cmyk);
  assert.deepEqual([decoded.width, decoded.height, decoded.data.length], [raw.width, raw.height, raw.data.length]);
  // The picture's saturated blues lie outside print CMYK, so they come back duller (about 20 per
  // channel on average); reading K as alpha or C, M, Y as R, G, B would be off by 70 or more,
  // as far as the picture with the opposite checkerboard is.
  const diff = meanDiff(decoded.data, raw.data);
  const other = meanDiff(decoded.data, testPixels(raw.width, raw.height, 1).data);
  assert.ok(diff < 30 && diff < other / 2, `CMYK JPEG differs from the RGB original by ${diff.toFixed(2)} per channel, from another picture by ${other.toFixed(2)}`);
  assert.equal((await model.encodeImage(cmyk)).nTokens, 16);
});

test('a 16-bit PNG becomes the same 8-bit picture', async () => {
  const png16 = await sharp(raw.data, rawOptions).toColourspace('rgb16').png().toBuffer();
  const meta = await sharp(png16).metadata();
  assert.deepEqual([meta.depth, meta.bitsPerSample], ['ushort', 16]);
  assert.deepEqual((await decodeImage(png16)).data, new Uint8Array(raw.data));
  assert.deepEqual(await floats(png16), await floats(raw));
});

test('a grey+alpha PNG: grey is copied to RGB, transparency composed onto the background', async () => {
  // Four pixels, grey and alpha: opaque 100, transparent 50, half-transparent 0, opaque 255.
  const ga = await sharp(Buffer.from([100, 255, 50, 0, 0, 128, 255, 255]), { raw: { width: 4, height: 1, channels: 2 } }).toColourspace('b-w').png().toBuffer();
  const meta = await sharp(ga).metadata();
  assert.deepEqual([meta.channels, meta.space, meta.hasAlpha], [2, 'b-w', true]);
  const onWhite = await decodeImage(ga);
  assert.deepEqual([...onWhite.data], [100, 100, 100, 255, 255, 255, 127, 127, 127, 255, 255, 255]);
  const onBlack = await decodeImage(ga, { background: { r: 0, g: 0, b: 0 } });
  assert.deepEqual([...onBlack.data], [100, 100, 100, 0, 0, 0, 0, 0, 0, 255, 255, 255]);
  assert.equal((await model.encodeImage(ga)).nTokens, 16);
});

test('raw pixels whose buffer does not match width x height x channels are ERR_INVALID_ARGUMENT', async () => {
  const cases = [
    [{ data: new Uint8Array(13), width: 2, height: 2, channels: 3 }, /holds 13 bytes but 2x2x3 needs 12/],
    [{ data: new Uint8Array(12), width: 2, height: 2, channels: 4 }, /holds 12 bytes but 2x2x4 needs 16/],
    [{ data: new Uint8Array(3), width: 1e9, height: 1e9, channels: 3 }, /needs 3000000000000000000/],
    [{ data: new Uint8Array(0), width: 0, height: 0, channels: 3 }, /positive integer width and height/],
    [{ data: new Uint8Array(3), width: Number.NaN, height: 1, channels: 3 }, /positive integer width and height/],
    [{ data: new Uint8Array(3), width: 1.5, height: 2, channels: 1 }, /positive integer width and height/],
    [{ data: new Uint8Array(5), width: 1, height: 1, channels: 5 }, /channels 1, 2, 3 or 4/],
    [{ data: new Float32Array(12), width: 2, height: 2, channels: 3 }, /Expected an image/],
  ];
  for (const [input, pattern] of cases) await rejectsWith(model.encodeImage(input), 'ERR_INVALID_ARGUMENT', pattern, pattern.source);
  // Inside a prompt too, and the session goes on.
  const session = model.createSession();
  await rejectsWith(session.ask([cases[0][0], 'what is this?'], greedy(2)), 'ERR_INVALID_ARGUMENT', /holds 13 bytes/);
  assert.equal((await collect(session.stream([raw, 'what is this?'], greedy(2)))).tokens.length, 2);
  await session.dispose();
});

test('a sharp instance from require("sharp") (its CommonJS build) is an image too', async () => {
  const sharpCjs = createRequire(import.meta.url)('sharp');
  assert.notEqual(sharpCjs, sharp, 'sharp ships two builds; this test needs the other one');
  const reference = await floats(raw);
  assert.deepEqual(await floats(sharpCjs(raw.data, rawOptions)), reference);
  assert.deepEqual(await floats(sharp(raw.data, rawOptions)), reference);
  const session = model.createSession();
  assert.equal((await collect(session.stream([sharpCjs(fx.images.png), 'hi'], greedy(2)))).tokens.length, 2);
  await session.dispose();
});
