// Pre-flight checks of projector (mmproj) and text model headers.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readGgufHeader } from '../../dist/gguf/read.js';
import { GgufValueType } from '../../dist/gguf/types.js';
import { kv } from '../../dist/gguf/write.js';
import { checkMmprojHeader, checkTextModelHeader } from '../../dist/load-plan/projector-check.js';
import { writeTinyLlama, writeTinyMmproj } from '../../tools/fixtures/models.js';

let dir;
let llama; // header of the tiny text model
let mmproj; // header of the tiny projector (3 layers, so layer 1 is "inner" and 2 is the skipped last one)
let mmprojInfo;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-proj-'));
  llama = await readGgufHeader((await writeTinyLlama(join(dir, 'llama.gguf'))).path);
  mmprojInfo = await writeTinyMmproj(join(dir, 'mmproj.gguf'), { nLayer: 3 });
  mmproj = await readGgufHeader(mmprojInfo.path);
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

let n = 0;
async function mmprojWith(options) {
  const info = await writeTinyMmproj(join(dir, `m${n++}.gguf`), { nLayer: 3, ...options });
  return readGgufHeader(info.path);
}

/** A copy of a header with tensors removed or added, for layouts the fixture does not write. */
function edited(h, { remove = [], add = [], meta = [] } = {}) {
  const tensorsByName = new Map(h.tensorsByName);
  for (const name of remove) tensorsByName.delete(name);
  for (const t of add) tensorsByName.set(t.name, { type: 0, offset: 0n, byteSize: 0, ...t });
  const metadata = new Map(h.metadata);
  for (const e of meta) metadata.set(e.key, e);
  return { ...h, metadata, tensorsByName, tensors: [...tensorsByName.values()] };
}

describe('checkMmprojHeader', () => {
  test('the tiny LLaVA projector passes', () => {
    assert.deepEqual(checkMmprojHeader(mmproj, 64), []);
    assert.deepEqual(checkMmprojHeader(mmproj, undefined), []);
  });

  // Which tensors libmtmd needs, established by deleting each one from a real file and
  // loading it: these crash (segfault) or fail, everything else is optional.
  const required = (name) =>
    /^v\.(patch_embd|position_embd)\.weight$/.test(name) ||
    /^v\.blk\.[01]\.attn_[qkv]\.weight$/.test(name) || // not layer 2: the LLaVA graph skips the last layer
    /^v\.blk\.\d\.(attn_out|ffn_up|ffn_down)\.weight$/.test(name) ||
    /^mm\.[02]\.(weight|bias)$/.test(name);

  test('each omitted required tensor is named; optional ones are not flagged', async () => {
    let requiredCount = 0;
    for (const name of mmprojInfo.tensorNames) {
      const problems = checkMmprojHeader(edited(mmproj, { remove: [name] }), 64);
      if (required(name)) {
        requiredCount++;
        assert.equal(problems.length, 1, `${name}: ${problems.join('; ')}`);
        assert.ok(problems[0].includes(name) && /missing/.test(problems[0]), problems[0]);
      } else {
        assert.deepEqual(problems, [], `${name} is optional`);
      }
    }
    assert.equal(requiredCount, 2 + 2 * 3 + 3 * 3 + 4);
  });

  test('the omitTensor fixture option produces a file the check rejects', async () => {
    const h = await mmprojWith({ omitTensor: 'mm.2.weight' });
    assert.match(checkMmprojHeader(h, 64).join('\n'), /mm\.2\.weight/);
  });

  test('a projector made for another text model is a size mismatch', async () => {
    const h = await mmprojWith({ nEmbdText: 32 });
    assert.deepEqual(checkMmprojHeader(h, 32), []);
    assert.deepEqual(checkMmprojHeader(h, 64), ["projector output size 32 does not match the text model's embedding size 64: this projector was made for a different language model"]);
  });

  test('a text model given as the projector', () => {
    const problems = checkMmprojHeader(llama, 64);
    assert.equal(problems.length, 1);
    assert.match(problems[0], /this looks like a text model \(architecture llama\), not a projector/);
  });

  test('keys: missing, wrongly typed, or with impossible values', async () => {
    const cases = [
      [{ 'clip.has_vision_encoder': null }, /clip\.has_vision_encoder .*missing/],
      [{ 'clip.has_vision_encoder': kv.bool('', false) }, /no vision encoder/],
      [{ 'clip.has_vision_encoder': kv.u8('', 1) }, /clip\.has_vision_encoder must be bool but is uint8/],
      [{ 'clip.projector_type': null }, /projector type .*missing/],
      [{ 'clip.projector_type': kv.str('', 'mlp_v9') }, /unknown projector type "mlp_v9"/],
      [{ 'clip.projector_type': kv.u32('', 1) }, /must be a string but is uint32/],
      [{ 'clip.vision.patch_size': kv.i32('', 8) }, /clip\.vision\.patch_size must be uint32 but is int32/],
      [{ 'clip.vision.image_size': null }, /clip\.vision\.image_size \(uint32\) is missing/],
      [{ 'clip.vision.projection_dim': null }, /projection_dim/],
      [{ 'clip.vision.attention.layer_norm_epsilon': kv.f64('', 1e-5) }, /must be float32 but is float64/],
      [{ 'clip.vision.image_mean': kv.f32Array('', [0.5, 0.5]) }, /image_mean has 2 elements/],
      [{ 'clip.vision.image_std': { type: GgufValueType.ARRAY, arrayType: GgufValueType.FLOAT64, value: [1, 1, 1] } }, /image_std must be an array of float32 but is float64\[\]/],
      [{ 'clip.vision.patch_size': kv.u32('', 0) }, /patch_size is 0/],
      [{ 'clip.vision.attention.head_count': kv.u32('', 5) }, /not divisible by the head count 5/],
      [{ 'clip.use_gelu': kv.bool('', true), 'clip.use_silu': kv.bool('', true) }, /both true/],
      [{ 'clip.vision.feature_layer': kv.i32Array('', [4]) }, /names layer 4, but the encoder has only 3/],
      [{ 'general.name': kv.u32('', 1) }, /general\.name must be a string/],
    ];
    for (const [overrides, pattern] of cases) {
      const problems = checkMmprojHeader(await mmprojWith({ overrides }), 64);
      assert.match(problems.join('\n'), pattern, JSON.stringify(Object.keys(overrides)));
    }
  });

  test('feature layers decide which layers need q/k/v', async () => {
    const h = await mmprojWith({ overrides: { 'clip.vision.feature_layer': kv.i32Array('', [1]) } });
    assert.deepEqual(checkMmprojHeader(h, 64), []);
    assert.deepEqual(checkMmprojHeader(edited(h, { remove: ['v.blk.1.attn_q.weight'] }), 64), [], 'only layer 0 runs');
    assert.match(checkMmprojHeader(edited(h, { remove: ['v.blk.0.attn_q.weight'] }), 64).join(), /v\.blk\.0\.attn_q\.weight/);
  });

  test('shape checks on the LLaVA path', () => {
    const bad = (name, shape) => checkMmprojHeader(edited(mmproj, { add: [{ ...mmproj.tensorsByName.get(name), shape }] }), 64).join('\n');
    assert.match(bad('v.patch_embd.weight', [8, 8, 3, 40]), /dimension 3 should be 48/);
    assert.match(bad('v.position_embd.weight', [48, 16]), /16 positions but the image needs 17/);
    assert.match(bad('v.blk.0.attn_q.weight', [40, 48]), /attn_q\.weight .*dimension 0 should be 48/);
    assert.match(bad('mm.2.weight', [90, 64]), /mm\.2\.weight .*dimension 0 should be 96/);
    assert.match(bad('v.blk.0.ffn_down.weight', [80, 40]), /do not form an 48 -> n_ff -> 48 feed-forward block/);
    // Old conversions store ffn_up/ffn_down (weights and biases) the other way round; clip.cpp swaps them back.
    const swapped = edited(mmproj, { add: [
      { ...mmproj.tensorsByName.get('v.blk.0.ffn_up.weight'), shape: [80, 48] },
      { ...mmproj.tensorsByName.get('v.blk.0.ffn_up.bias'), shape: [48] },
      { ...mmproj.tensorsByName.get('v.blk.0.ffn_down.weight'), shape: [48, 80] },
      { ...mmproj.tensorsByName.get('v.blk.0.ffn_down.bias'), shape: [80] },
    ] });
    assert.deepEqual(checkMmprojHeader(swapped, 64), []);
    // A bias that does not follow its weight would make ggml assert in the first encode.
    assert.match(bad('v.blk.0.attn_q.bias', [47]), /attn_q\.bias .*dimension 0 should be 48/);
  });

  test('an "mlp" projector with mm.3 is checked as the normalised variant', () => {
    const mm = (name, shape) => ({ name, shape });
    const h = edited(mmproj, {
      remove: ['mm.2.weight', 'mm.2.bias'],
      add: [mm('mm.1.weight', [96]), mm('mm.1.bias', [96]), mm('mm.3.weight', [96, 64]), mm('mm.3.bias', [64]), mm('mm.4.weight', [64]), mm('mm.4.bias', [64])],
    });
    assert.deepEqual(checkMmprojHeader(h, 64), []);
    assert.match(checkMmprojHeader(h, 80).join(), /projector output size 64 does not match the text model's embedding size 80/);
    assert.match(checkMmprojHeader(edited(h, { remove: ['mm.4.bias'] }), 64).join(), /mm\.4\.bias is missing/);
  });

  test('MobileVLM (ldp) projectors need their tensors and a 24x24 grid', () => {
    const h = edited(mmproj, { meta: [kv.str('clip.projector_type', 'ldp')] });
    const problems = checkMmprojHeader(h, 64).join('\n');
    assert.match(problems, /mm\.model\.mb_block\.1\.block\.2\.1\.bias is missing/);
    assert.match(problems, /24x24 patch grid/);
  });

  test('other projector types get the generic checks only', () => {
    const h = edited(mmproj, { meta: [kv.str('clip.projector_type', 'gemma3')], remove: ['mm.0.weight', 'v.position_embd.weight'] });
    assert.deepEqual(checkMmprojHeader(h, 64), []);
    assert.match(checkMmprojHeader(edited(h, { remove: ['v.patch_embd.weight'] }), 64).join(), /v\.patch_embd\.weight \(the patch embedding\) is missing/);
    assert.match(checkMmprojHeader(edited(h, { remove: ['v.blk.2.ffn_up.weight'] }), 64).join(), /v\.blk\.2\.ffn_up\.weight is missing/);
  });
});

describe('checkTextModelHeader', () => {
  test('the tiny llama passes', () => {
    assert.deepEqual(checkTextModelHeader(llama), []);
  });

  test('a projector given as the model', () => {
    const problems = checkTextModelHeader(mmproj);
    assert.equal(problems.length, 1);
    assert.match(problems[0], /this looks like a projector \(clip\), not a text model/);
  });

  test('missing essentials', () => {
    const drop = (key) => ({ ...llama, metadata: new Map([...llama.metadata].filter(([k]) => k !== key)) });
    assert.match(checkTextModelHeader(drop('general.architecture')).join(), /general\.architecture is missing/);
    assert.match(checkTextModelHeader(drop('llama.embedding_length')).join(), /llama\.embedding_length/);
    assert.match(checkTextModelHeader(drop('tokenizer.ggml.model')).join(), /no tokenizer/);
    const lora = { ...llama, metadata: new Map([...llama.metadata, ['general.type', kv.str('general.type', 'adapter')]]) };
    assert.match(checkTextModelHeader(lora).join(), /LoRA adapter/);
  });
});
