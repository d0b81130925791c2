// Issue 6, "Bad input table" and "Misuse": every input a user or a file can throw at the package
// gets a typed error with a stable `code` (or, for the odd-but-valid rows, the right picture),
// and the process lives on: every test here runs in this process, after the others.
//
// Rows with a good test elsewhere are not repeated here:
//
// | row                                            | file                          | test
// |------------------------------------------------|-------------------------------|------------------------------------------------
// | model: missing path, directory, 0 bytes        | test/native/errors.test.js    | model files that cannot load
// | model: wrong magic (text, GGML/GGJT, HTML, LFS) | test/native/errors.test.js   | model files that cannot load ('junk.gguf')
// |                                                | test/unit/gguf.test.js        | wrong magic says "not a GGUF file", ...
// | projector: missing path                        | test/native/errors.test.js    | projectors that cannot load
// | projector output size != the LLM's             | test/native/errors.test.js    | projectors that cannot load ('wide-mmproj')
// |                                                | test/native/minigpt4.test.js  | bad BLIP-2 projectors ... ('wide.gguf')
// | text model as projector; projector as model    | test/native/errors.test.js    | projectors that cannot load / model files that cannot load
// | BLIP-2 patch_size not dividing image_size      | test/native/minigpt4.test.js  | bad BLIP-2 projectors ... ('odd.gguf')
// | image: 0 bytes, missing file, directory, text  | test/native/image.test.js     | bad images reject with typed errors
// | image: EXIF-rotated JPEG and PNG (6 and 8)     | test/native/image.test.js     | EXIF orientation is applied
// | image: raw pixels, buffer too short            | test/native/image.test.js     | bad images reject with typed errors
// | prompt longer than the context (chat template) | test/native/session.test.js   | a prompt longer than the context is ERR_CONTEXT_OVERFLOW ...
// | NUL bytes in the prompt text                   | test/native/session.test.js   | text with NUL bytes is accepted
// | lone surrogate in the prompt text              | test/native/session.test.js   | stream options are validated by name, type and range
// | stream options: -1, NaN, out of range, top_p   | test/native/session.test.js   | stream options are validated by name, type and range
// | loadModel: threads 0, context_size, gpuLayers  | test/native/errors.test.js    | loadModel options are validated
// | streams started together run in call order     | test/native/session.test.js   | streams on one session run one after another, in order
// | abort before start (stream; load)              | test/native/session.test.js   | an already-aborted signal rejects before any work
// |                                                | test/native/errors.test.js    | abort and a throwing onProgress stop a load
// | use after dispose; dispose twice (sequential)  | test/native/errors.test.js    | use after dispose is ERR_DISPOSED; dispose is idempotent
// | dispose during a stream, iterator closed       | test/native/session.test.js   | dispose during a stream stops it; use after dispose ...
// | header fuzzing of models, projectors, images   | test/native/fuzz-short.test.js| (all)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { decodeImage, loadModel } from '../../dist/index.js';
import { kv } from '../../dist/gguf/write.js';
import { writeTinyBlip2 } from '../fixtures/blip2.js';
import { pngClaiming, writeGgufWithField } from '../fixtures/hostile.js';
import { writeTinyLlama, writeTinyMmproj } from '../fixtures/models.js';
import { makeRng } from '../fixtures/prng.js';
import { collect, makeFixtures, root, testPixels } from '../helpers.js';

let fx, model;
before(async () => {
  fx = await makeFixtures();
  model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
});
after(async () => {
  await model?.dispose();
  await fx?.cleanup();
});

/** Asserts that `promise` rejects with a MinigptError of `code` whose message matches `pattern`. */
const rejectsWith = (promise, code, pattern, label = '') =>
  assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `${label}: ${err.message}`);
    assert.equal(typeof err.message, 'string');
    if (pattern) assert.match(err.message, pattern, label);
    return true;
  });

const greedy = (maxTokens) => ({ temperature: 0, maxTokens });
let n = 0;
const tmp = (name) => join(fx.dir, `${n++}-${name}`);

// ---------------------------------------------------------------------------------------------
// Models

test('model and projector files truncated at every 10% of their length', async () => {
  for (const [file, code, options] of [
    [fx.model, 'ERR_MODEL_LOAD', (p) => ({ model: p })],
    [fx.projector, 'ERR_PROJECTOR_LOAD', (p) => ({ model: fx.model, projector: p })],
  ]) {
    const bytes = await readFile(file);
    for (let tenth = 1; tenth <= 9; tenth++) {
      const cut = tmp(`cut-${tenth}0.gguf`);
      await writeFile(cut, bytes.subarray(0, Math.floor((bytes.length * tenth) / 10)));
      await rejectsWith(loadModel(options(cut)), code, /truncated.*download it again/s, `${code} ${tenth}0%`);
    }
  }
});

test('header fields rewritten: unsupported version, tensor data past the end, absurd counts and string lengths', async () => {
  const big = 1n << 60n;
  const cases = [
    ['magic', undefined, 0x46554747 ^ 0xff, /not a GGUF file/],
    ['version', undefined, 1, /version 1 is no longer supported/],
    ['version', undefined, 4, /version 4 is newer/],
    ['tensor-offset', 'output.weight', 1n << 40n, /tensor "output\.weight" ends at byte \d+ but the file is only \d+ bytes/],
    ['tensor-offset', 'token_embd.weight', 3n * 1024n * 1024n, /tensor "token_embd\.weight" ends at byte/],
    ['tensor-count', undefined, big, /declares \d+ tensors, which is impossible/],
    ['kv-count', undefined, big, /declares \d+ metadata entries, which is impossible/],
    ['key-length', undefined, big, /metadata key #0 claims to be \d+ bytes long/],
    ['string-length', 'general.architecture', 1n << 62n, /value of "general\.architecture" claims to be \d+ bytes long/],
    ['array-length', 'tokenizer.ggml.tokens', 1n << 61n, /array "tokenizer\.ggml\.tokens" claims \d+ elements/],
    ['element-length', 'tokenizer.ggml.tokens', 1n << 50n, /element 0 of "tokenizer\.ggml\.tokens" claims to be \d+ bytes long/],
    ['tensor-name-length', undefined, 1n << 55n, /name of tensor #0 claims to be \d+ bytes long/],
    ['tensor-ndims', undefined, 1000, /has 1000 dimensions; ggml allows at most 4/],
    ['tensor-dim', 'token_embd.weight', 1n << 50n, /tensor "token_embd\.weight" .* needs \d+ bytes, more than the whole/],
  ];
  for (const [kind, key, value, pattern] of cases) {
    const path = tmp(`${kind}.gguf`);
    await writeGgufWithField(fx.model, path, { kind, key }, value);
    await rejectsWith(loadModel({ model: path }), 'ERR_MODEL_LOAD', pattern, `model ${kind}`);
  }
  // The projector goes through the same reader and says which file is at fault.
  for (const [kind, key, value, pattern] of [
    ['version', undefined, 4, /version 4 is newer/],
    ['tensor-offset', 'mm.2.bias', 1n << 40n, /tensor "mm\.2\.bias" ends at byte/],
    ['kv-count', undefined, big, /which is impossible/],
    ['string-length', 'clip.projector_type', 1n << 62n, /"clip\.projector_type" claims to be \d+ bytes long/],
  ]) {
    const path = tmp(`proj-${kind}.gguf`);
    await writeGgufWithField(fx.projector, path, { kind, key }, value);
    await rejectsWith(loadModel({ model: fx.model, projector: path }), 'ERR_PROJECTOR_LOAD', new RegExp(`Projector file .*${pattern.source}`), `projector ${kind}`);
  }
});

test('an unknown model architecture or projector type is refused before llama.cpp sees it', async () => {
  const arch = tmp('arch.gguf');
  await writeTinyLlama(arch, { overrides: { 'general.architecture': kv.str('general.architecture', 'frobnicator') } });
  await rejectsWith(loadModel({ model: arch }), 'ERR_MODEL_LOAD', /unknown model architecture "frobnicator"/);
  const type = tmp('type.gguf');
  await writeTinyMmproj(type, { overrides: { 'clip.projector_type': kv.str('clip.projector_type', 'frobnicator') } });
  await rejectsWith(loadModel({ model: fx.model, projector: type }), 'ERR_PROJECTOR_LOAD', /unknown projector type "frobnicator".*supports mlp/);
});

test('a BLIP-2 projector given as the model says to pass it as the projector', async () => {
  const blip2 = tmp('blip2.gguf');
  await writeTinyBlip2(blip2, { nEmbdText: 64 });
  await rejectsWith(loadModel({ model: blip2 }), 'ERR_MODEL_LOAD', /BLIP-2 projector, not a text model: pass it as the projector/);
  await rejectsWith(loadModel({ model: blip2, projector: fx.model }), 'ERR_MODEL_LOAD', /BLIP-2 projector/);
});

test('an mmproj missing any one tensor: required ones are named, without them it runs', async () => {
  const { tensorNames } = await writeTinyMmproj(tmp('full-mmproj.gguf'), { nEmbdText: 64 });
  const refused = [];
  const image = fx.images.raw;
  for (const omitTensor of tensorNames) {
    const path = tmp('omit-mmproj.gguf');
    await writeTinyMmproj(path, { nEmbdText: 64, omitTensor });
    let m;
    try {
      m = await loadModel({ model: fx.model, projector: path, threads: 2 });
    } catch (err) {
      assert.equal(err.code, 'ERR_PROJECTOR_LOAD', `${omitTensor}: ${err.message}`);
      assert.match(err.message, new RegExp(`required tensor ${omitTensor.replace(/\./g, '\\.')}\\b.* is missing`));
      refused.push(omitTensor);
      continue;
    }
    // Optional: libmtmd loads it, encodes with it and the model answers.
    try {
      const embedding = await m.encodeImage(image);
      assert.equal(embedding.nTokens, 16, omitTensor);
      assert.ok(embedding.toFloat32Array().every(Number.isFinite), omitTensor);
      const { tokens } = await collect(m.createSession().stream([embedding, 'hi'], greedy(2)));
      assert.equal(tokens.length, 2, omitTensor);
    } finally {
      await m.dispose();
    }
  }
  // Two layers: the patch and position embeddings, q/k/v of layer 0 (the LLaVA graph skips the
  // last layer), attn_out/ffn_up/ffn_down of both, and the two MLP layers.
  assert.equal(refused.length, 2 + 3 + 2 * 3 + 4, refused.join(' '));
  assert.ok(refused.includes('v.blk.0.attn_q.weight') && !refused.includes('v.blk.1.attn_q.weight'));
});

test('a BLIP-2 projector missing any one tensor is refused, naming it', async () => {
  const full = tmp('full-blip2.gguf');
  await writeTinyBlip2(full, { nEmbdText: 64 });
  const { readGgufHeader } = await import('../../dist/gguf/read.js');
  const names = (await readGgufHeader(full)).tensors.map((t) => t.name);
  assert.ok(names.length > 60);
  for (const omitTensor of names) {
    const path = tmp('omit-blip2.gguf');
    await writeTinyBlip2(path, { nEmbdText: 64, omitTensor });
    await rejectsWith(loadModel({ model: fx.model, projector: path }), 'ERR_PROJECTOR_LOAD', new RegExp(`missing tensor ${omitTensor.replace(/\./g, '\\.')}$`), omitTensor);
  }
});

test('BLIP-2 projectors whose hyperparameters disagree with each other or with the weights', async () => {
  const u32 = (key, v) => ({ [key]: kv.u32(key, v) });
  const cases = [
    ['vision width', {}, u32('blip2.vision.embedding_length', 48), /v\.patch_embd\.weight has the wrong shape \(dimension 3 is 32, expected 48\)/],
    ['vision heads', {}, u32('blip2.vision.attention.head_count', 3), /vision width is not a multiple of its head count/],
    ['vision MLP', {}, u32('blip2.vision.feed_forward_length', 64), /v\.blk\.0\.ffn_up\.weight has the wrong shape/],
    ['image size', {}, u32('blip2.vision.image_size', 42), /v\.position_embd has the wrong shape/],
    ['more vision blocks', {}, u32('blip2.vision.block_count', 3), /missing tensor v\.blk\.2\./],
    ['fewer vision blocks', {}, u32('blip2.vision.block_count', 1), /weights for vision block 1 but blip2\.vision\.block_count is 1.*convert the checkpoint again/],
    ['Q-Former width', {}, u32('blip2.qformer.embedding_length', 32), /qf\.query_tokens has the wrong shape/],
    ['Q-Former heads', {}, u32('blip2.qformer.attention.head_count', 5), /Q-Former hidden size is not a multiple of its head count/],
    ['Q-Former MLP', {}, u32('blip2.qformer.feed_forward_length', 80), /qf\.blk\.0\.ffn_up\.weight has the wrong shape/],
    ['more Q-Former blocks', {}, u32('blip2.qformer.block_count', 3), /missing tensor qf\.blk\.2\./],
    ['fewer Q-Former blocks', {}, u32('blip2.qformer.block_count', 1), /weights for Q-Former block 1 but blip2\.qformer\.block_count is 1/],
    ['query count', {}, u32('blip2.qformer.query_count', 16), /qf\.query_tokens has the wrong shape \(dimension 1 is 8, expected 16\)/],
    ['cross-attention every 0 layers', {}, u32('blip2.qformer.cross_attention_frequency', 0), /cross_attention_frequency must be a positive size/],
    ['cross-attention every layer, weights every other', {}, u32('blip2.qformer.cross_attention_frequency', 1), /missing tensor qf\.blk\.1\.cross_q\.weight/],
    ['cross-attention weights every layer, header every other', { crossFreq: 1, qfLayers: 3 }, u32('blip2.qformer.cross_attention_frequency', 2),
      /Q-Former block 1 has cross-attention weights but blip2\.qformer\.cross_attention_frequency 2 gives it none/],
    ['variant patch_group with Q-Former weights', {}, { 'blip2.variant': kv.str('blip2.variant', 'patch_group') }, /proj\.weight has the wrong shape/],
    ['unknown variant', {}, { 'blip2.variant': kv.str('blip2.variant', 'perceiver') }, /unknown blip2\.variant "perceiver"/],
    ['missing size', {}, { 'blip2.vision.patch_size': null }, /blip2\.vision\.patch_size is missing/],
    ['negative epsilon', {}, { 'blip2.vision.attention.layer_norm_epsilon': kv.f32('blip2.vision.attention.layer_norm_epsilon', -1) }, /epsilon must be a finite number >= 0/],
  ];
  for (const [label, options, overrides, pattern] of cases) {
    const path = tmp('blip2-hparams.gguf');
    await writeTinyBlip2(path, { nEmbdText: 64, ...options, overrides });
    await rejectsWith(loadModel({ model: fx.model, projector: path }), 'ERR_PROJECTOR_LOAD', pattern, label);
  }
  // Consistent variations load and encode.
  for (const [label, overrides] of [['8 vision heads', u32('blip2.vision.attention.head_count', 8)], ['8 Q-Former heads', u32('blip2.qformer.attention.head_count', 8)]]) {
    const path = tmp('blip2-ok.gguf');
    await writeTinyBlip2(path, { nEmbdText: 64, overrides });
    const m = await loadModel({ model: fx.model, projector: path, threads: 2 });
    assert.equal((await m.encodeImage(fx.images.raw)).nTokens, 8, label);
    await m.dispose();
  }
});

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

// ---------------------------------------------------------------------------------------------
// Prompts and options

test('a prompt whose image crosses the end of the context is ERR_CONTEXT_OVERFLOW, with template none too', async () => {
  const image = await model.encodeImage(fx.images.png);
  const session = model.createSession({ contextSize: 256, template: 'none' });
  // 'x ' is one token: 238 of them, BOS, then 16 image positions do not fit in 256.
  await rejectsWith(session.ask(['x '.repeat(238), image, 'y'], greedy(8)), 'ERR_CONTEXT_OVERFLOW', /needs 2\d\d positions but the context holds 256.*larger contextSize/);
  await rejectsWith(session.ask('x '.repeat(5000), greedy(8)), 'ERR_CONTEXT_OVERFLOW', /contextSize/);
  assert.equal(session.stats.contextUsed, 0);
  // Just fitting, it answers until the context is full, then stops (the documented truncation).
  const r = await collect(session.stream(['x '.repeat(230), image, 'y'], greedy(100)));
  assert.ok(r.tokens.length > 0 && r.tokens.length < 10, `${r.tokens.length} tokens`);
  assert.ok(session.stats.contextUsed <= 256);
  await session.reset();
  assert.equal((await collect(session.stream([image, 'hi'], greedy(4)))).tokens.length, 4);
  await session.dispose();
  await image.dispose();
});

test('NUL bytes pass through tokenize, the system prompt and stop strings', async () => {
  const ids = await model.tokenize('a\u0000b');
  assert.ok(ids.length >= 3);
  assert.equal(await model.detokenize(ids), 'a\u0000b');
  const session = model.createSession({ systemPrompt: 'sys\u0000tem' });
  const r = await collect(session.stream('a\u0000b', { ...greedy(4), stop: ['\u0000'] }));
  assert.equal(r.tokens.length, 4);
  await session.dispose();
});

test('lone surrogates are ERR_INVALID_ARGUMENT wherever text goes in', async () => {
  for (const bad of ['\uD800', 'x\uDC00y', 'end\uDBFF']) {
    await rejectsWith(model.tokenize(bad), 'ERR_INVALID_ARGUMENT', /lone UTF-16 surrogate.*well-formed/, 'tokenize');
    assert.throws(() => model.createSession({ systemPrompt: bad }), { code: 'ERR_INVALID_ARGUMENT', message: /systemPrompt contains a lone/ });
    const session = model.createSession();
    await rejectsWith(session.ask([raw, bad]), 'ERR_INVALID_ARGUMENT', /content\[1\] contains a lone/);
    await rejectsWith(session.ask('fine', { stop: ['ok', bad] }), 'ERR_INVALID_ARGUMENT', /stop\[1\] contains a lone/);
    assert.equal(session.stats.promptTokens, 0);
    await session.dispose();
  }
  // A well-formed pair is fine.
  assert.ok((await model.tokenize('\uD83D\uDE00')).length > 0);
});

test('negative, NaN, infinite and fractional numbers are ERR_INVALID_ARGUMENT everywhere', async () => {
  const bads = [-1, Number.NaN, Infinity, -Infinity, 1.5];
  const loadNumbers = { threads: [0, ...bads], contextSize: [0, ...bads], gpuLayers: [...bads] };
  for (const [key, values] of Object.entries(loadNumbers))
    for (const value of values) await rejectsWith(loadModel({ model: fx.model, [key]: value }), 'ERR_INVALID_ARGUMENT', new RegExp(key), `${key} ${value}`);
  for (const key of ['contextSize', 'threads', 'batchSize'])
    for (const value of bads) assert.throws(() => model.createSession({ [key]: value }), { code: 'ERR_INVALID_ARGUMENT', message: new RegExp(key) }, `${key} ${value}`);
  const session = model.createSession();
  const streamNumbers = ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'seed'];
  for (const key of streamNumbers)
    for (const value of [Number.NaN, -1, -Infinity, Infinity])
      await rejectsWith(session.ask('x', { [key]: value }), 'ERR_INVALID_ARGUMENT', new RegExp(key), `${key} ${value}`);
  for (const key of ['maxTokens', 'topK', 'seed']) await rejectsWith(session.ask('x', { [key]: 2.5 }), 'ERR_INVALID_ARGUMENT', new RegExp(key));
  assert.equal(session.stats.promptTokens, 0);
  for (const background of [{ r: -1, g: 0, b: 0 }, { r: 0, g: Number.NaN, b: 0 }, { r: 0, g: 0, b: 256 }, { r: 0, g: 0 }])
    await rejectsWith(model.encodeImage(raw, { background }), 'ERR_INVALID_ARGUMENT', /background/);
  for (const ids of [[Number.NaN], [1.5], [Infinity]]) await rejectsWith(model.detokenize(ids), 'ERR_INVALID_ARGUMENT', /tokens/, String(ids));
  for (const ids of [[-1], [model.info.vocabularySize]]) await rejectsWith(model.detokenize(ids), 'ERR_INVALID_ARGUMENT', undefined, String(ids));
  assert.equal((await collect(session.stream('still here', greedy(2)))).tokens.length, 2);
  await session.dispose();
});

test('unknown option names: a runtime ERR_INVALID_ARGUMENT with a hint, and a TypeScript error', async () => {
  await rejectsWith(loadModel({ model: fx.model, gpu_layers: 1 }), 'ERR_INVALID_ARGUMENT', /Unknown option "gpu_layers" in loadModel options; did you mean "gpuLayers"\?/);
  assert.throws(() => model.createSession({ system_prompt: 'x' }), { code: 'ERR_INVALID_ARGUMENT', message: /did you mean "systemPrompt"/ });
  assert.throws(() => model.createSession({ temperature: 0 }), { code: 'ERR_INVALID_ARGUMENT', message: /Unknown option "temperature" in createSession options; known options: contextSize/ });
  await rejectsWith(model.encodeImage(raw, { max_pixels: 10 }), 'ERR_INVALID_ARGUMENT', /did you mean "maxPixels"/);
  await rejectsWith(model.tokenize('x', { add_bos: true }), 'ERR_INVALID_ARGUMENT', /did you mean "addBos"/);
  await rejectsWith(model.detokenize([1], { Special: true }), 'ERR_INVALID_ARGUMENT', /Unknown option "Special"/);
  const session = model.createSession();
  await rejectsWith(session.ask('x', { max_tokens: 4 }), 'ERR_INVALID_ARGUMENT', /did you mean "maxTokens"/);
  await rejectsWith(session.ask('x', { maxTokens: 4, typicalP: 1 }), 'ERR_INVALID_ARGUMENT', /Unknown option "typicalP"/);
  await session.dispose();

  // The published types reject the same names at compile time (excess property checks).
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-types-'));
  try {
    const index = join(root, 'dist', 'index.js').replace(/\\/g, '/');
    const uses = [
      "await loadModel({ model: 'm.gguf', gpu_layers: 1 });",
      'model.createSession({ system_prompt: "x" });',
      "await model.encodeImage('x.png', { max_pixels: 10 });",
      "await model.tokenize('x', { add_bos: true });",
      "await session.ask('x', { top_p: 0.5 });",
      "for await (const _ of session.stream('x', { max_tokens: 1 }));",
    ];
    const source = (expectError) =>
      `import { loadModel, type Model, type Session } from '${index}';\n` +
      'export async function f(model: Model, session: Session) {\n' +
      "  await loadModel({ model: 'm.gguf', gpuLayers: 1 }); model.createSession({ systemPrompt: 'x' }); await session.ask('x', { topP: 0.5 });\n" +
      uses.map((u) => (expectError ? `  // @ts-expect-error unknown option\n  ${u}` : `  ${u}`)).join('\n') +
      '\n}\n';
    await writeFile(join(dir, 'expect.ts'), source(true));
    await writeFile(join(dir, 'plain.ts'), source(false));
    const tsc = (file) =>
      promisify(execFile)(process.execPath, [
        join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext',
        '--target', 'es2022', '--lib', 'es2023,esnext.disposable', '--types', 'node', '--typeRoots', join(root, 'node_modules', '@types'), join(dir, file),
      ]).then(() => '', (err) => err.stdout);
    assert.equal(await tsc('expect.ts'), '', 'each @ts-expect-error is used: the names are type errors');
    const errors = (await tsc('plain.ts')).split('\n').filter((l) => /error TS2561|error TS2353/.test(l));
    assert.equal(errors.length, uses.length, errors.join('\n'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Misuse

test('two streams iterated at once on one session: the second starts after the first ends', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const log = [];
  const drain = async (name, stream) => {
    for await (const _ of stream) log.push(name);
    log.push(`${name} end`);
  };
  await Promise.all([drain('a', session.stream('first', greedy(6))), drain('b', session.stream('second', greedy(6)))]);
  assert.deepEqual(log, [...Array(6).fill('a'), 'a end', ...Array(6).fill('b'), 'b end']);
  await session.dispose();
});

test('abort while queued behind another stream: only the queued one rejects', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const controller = new AbortController();
  const first = collect(session.stream('one', greedy(30)));
  const second = session.ask('two', { ...greedy(30), signal: controller.signal });
  const third = collect(session.stream('three', greedy(3)));
  controller.abort(new Error('changed my mind'));
  await assert.rejects(second, (err) => err.code === 'ERR_ABORTED' && err.name === 'AbortError' && err.cause.message === 'changed my mind');
  assert.equal((await first).tokens.length, 30);
  assert.equal((await third).tokens.length, 3);
  await session.dispose();
});

test('dispose during a stream: the consumer\'s next read is ERR_DISPOSED, queued streams too', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const stream = session.stream('long one', greedy(1000));
  const first = stream.next();  // takes the session's lock
  const queued = session.ask('queued', greedy(200)).then(() => 'finished', (err) => err.code);
  assert.equal((await first).done, false);
  let pieces = 1;
  let disposing;
  await rejectsWith(
    (async () => {
      for (let r = await stream.next(); !r.done; r = await stream.next()) if (++pieces === 3) disposing = session.dispose();
    })(),
    'ERR_DISPOSED',
    /session has been disposed/,
  );
  assert.equal(pieces, 3, 'no piece reaches the consumer after dispose()');
  await disposing;
  assert.equal(await queued, 'ERR_DISPOSED');
  assert.equal(session.disposed, true);
  await rejectsWith(session.ask('x'), 'ERR_DISPOSED');
});

test('dispose does not wait for an iterator its consumer abandoned', { timeout: 20_000 }, async () => {
  const session = model.createSession();
  const it = session.stream('abandoned', greedy(1000));
  assert.equal((await it.next()).done, false);
  const start = performance.now();
  await session.dispose();
  assert.ok(performance.now() - start < 2000, 'dispose returned while the iterator is still open');
  await rejectsWith(it.next(), 'ERR_DISPOSED');
  assert.deepEqual(await it.next(), { done: true, value: undefined });
});

test('dispose twice at once, and while in use, for model, session and embedding', { timeout: 20_000 }, async () => {
  const m = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const embedding = await m.encodeImage(raw);
  await Promise.all([embedding.dispose(), embedding.dispose()]);
  assert.throws(() => embedding.toFloat32Array(), { code: 'ERR_DISPOSED' });
  await rejectsWith(m.createSession().ask([embedding, 'x']), 'ERR_INVALID_ARGUMENT', /disposed image embedding/);
  const session = m.createSession();
  const asking = session.ask('x', greedy(50)).then(() => 'finished', (err) => err.code);
  await Promise.all([session.dispose(), session.dispose(), m.dispose(), m.dispose()]);
  assert.equal(await asking, 'ERR_DISPOSED');
  assert.equal(m.disposed && session.disposed, true);
  await m.dispose();
});

test('disposing a model while its sessions stream stops them all with ERR_DISPOSED', { timeout: 20_000 }, async () => {
  const m = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const image = await m.encodeImage(raw);
  const sessions = [m.createSession(), m.createSession(), m.createSession({ template: 'none' })];
  const counts = sessions.map(() => 0);
  let started;
  const allStarted = new Promise((resolve) => (started = resolve));
  const runs = sessions.map(async (s, i) => {
    for await (const _ of s.stream([image, `stream ${i}`], greedy(2000))) if (++counts[i] === 2 && counts.every((c) => c >= 2)) started();
  });
  const settled = Promise.allSettled(runs);
  await allStarted;
  await m.dispose();
  const results = await settled;
  for (const [i, r] of results.entries()) {
    assert.equal(r.status, 'rejected', `session ${i} finished with ${counts[i]} tokens`);
    assert.equal(r.reason.code, 'ERR_DISPOSED');
    assert.ok(counts[i] < 2000);
  }
  assert.ok(sessions.every((s) => s.disposed) && image.disposed);
  await rejectsWith(m.encodeImage(raw), 'ERR_DISPOSED');
  // The process and the shared model of the other tests are fine.
  assert.equal((await collect(model.createSession().stream('after', greedy(2)))).tokens.length, 2);
});
