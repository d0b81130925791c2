// Issue 6, "Bad input table" and "Misuse": model and projector files.
// Every input a user or a file can throw at the package gets a typed error with a stable `code`
// (or, for the odd-but-valid rows, the right picture), and the process lives on: every test here
// runs in this process, after the others. The other groups: test/native/hostile-input-*.test.js.
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
// | header fuzzing of models, projectors, images   | test/native/fuzz-short.test.js| (all)
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { rejectsWith } from '../assertions.js';
import { kv } from '../../dist/gguf/write.js';
import { loadModel } from '../../dist/index.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { writeTinyLlama, writeTinyMmproj } from '../../tools/fixtures/models.js';
import { writeGgufWithField } from '../fixtures/hostile.js';
import { collect, loadTinyModel, releaseTinyModel } from '../helpers.js';

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

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
