// The BLIP-2 converter end to end: hyperparameter inference, refusals, options and the
// `minigpt convert` CLI, with every conversion read back as GGUF.
import { test, describe, before, after } from 'node:test';
import { rejectsWith } from '../assertions.js';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { convertBlip2, blip2TensorType } from '../../dist/convert/blip2.js';
import { readGgufHeader } from '../../dist/gguf/read.js';
import { GgmlType, getArray, getF32, getString, getU32 } from '../../dist/gguf/types.js';
import { f16ToF32, f32ToF16 } from '../../dist/gguf/write.js';
import { hasTorch, tinyBlip2, torchSave, writeSafetensors, writeTorchZip } from '../../tools/fixtures/checkpoints.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { readTensor } from '../fixtures/reference-llama.js';

const CLI = fileURLToPath(new URL('../../dist/cli/index.js', import.meta.url));
const TORCH = hasTorch();

let dir;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'minigpt-convert-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });
let counter = 0;
const tmp = (name) => join(dir, `${counter++}-${name}`);

const f16round = (x) => f16ToF32(f32ToF16(x));

async function hfDir(opts = {}, mutate = (m) => m) {
  const hf = tinyBlip2('hf', opts);
  const d = tmp('hf');
  await mkdir(d);
  await writeSafetensors(join(d, 'model.safetensors'), mutate(hf.model));
  await writeFile(join(d, 'config.json'), JSON.stringify(opts.config ?? hf.config));
  return { dir: d, ...hf };
}

async function lavisFiles(opts = {}) {
  const l = tinyBlip2('lavis', opts);
  const eva = tmp('eva_vit_g.pth');
  const blip2 = tmp('blip2_pretrained.pth');
  const mg = tmp('pretrained_minigpt4.pth');
  await writeTorchZip(eva, l.eva);
  await writeTorchZip(blip2, l.blip2, { nested: true });
  await writeTorchZip(mg, l.minigpt4, { nested: true });
  return { files: opts.patchGroup ? [eva, mg] : [eva, blip2, mg], ...l };
}

/** The tensor table (name, shape, type) of a GGUF, for comparing files. */
const table = (h) => h.tensors.map((t) => [t.name, t.shape.join('x'), t.type]);

const FTYPE = { f32: GgmlType.F32, f16: GgmlType.F16, q8_0: GgmlType.Q8_0 };

describe('convertBlip2', () => {
  for (const type of ['f32', 'f16', 'q8_0']) {
    test(`HF safetensors directory -> ${type} GGUF with the documented keys, names, shapes and types`, async () => {
      const src = await hfDir();
      const out = tmp(`hf-${type}.gguf`);
      const result = await convertBlip2({ inputs: [src.dir], output: out, type });
      const h = await readGgufHeader(out);
      assert.equal(result.tensors, h.tensors.length);
      assert.equal(result.bytes, h.fileSize);
      assert.ok(result.ignored.includes('language_model.model.embed_tokens.weight'));
      assert.ok(result.ignored.includes('qformer.encoder.layer.0.intermediate.dense.weight'));

      assert.equal(getString(h, 'general.architecture'), 'blip2');
      assert.equal(getString(h, 'blip2.variant'), 'qformer');
      assert.equal(getString(h, 'blip2.prompt_template'), 'none');
      const u32 = {
        'blip2.vision.image_size': 28, 'blip2.vision.patch_size': 14, 'blip2.vision.embedding_length': 32, 'blip2.vision.block_count': 2,
        'blip2.vision.attention.head_count': 4, 'blip2.vision.feed_forward_length': 48, 'blip2.qformer.embedding_length': 24,
        'blip2.qformer.block_count': 2, 'blip2.qformer.attention.head_count': 4, 'blip2.qformer.feed_forward_length': 40,
        'blip2.qformer.cross_attention_frequency': 2, 'blip2.qformer.query_count': 8, 'blip2.projection.input_group': 1,
        'blip2.projection.output_length': 64,
      };
      for (const [k, v] of Object.entries(u32)) assert.equal(getU32(h, k), v, k);
      assert.equal(getF32(h, 'blip2.vision.attention.layer_norm_epsilon'), Math.fround(1e-6));
      assert.equal(getF32(h, 'blip2.vision.ln_vision_epsilon'), Math.fround(1e-6)); // HF post_layernorm uses the config eps
      assert.equal(getF32(h, 'blip2.qformer.layer_norm_epsilon'), Math.fround(1e-12));
      assert.deepEqual(getArray(h, 'blip2.vision.image_mean'), [0.48145466, 0.4578275, 0.40821073].map(Math.fround));

      // Same table as the hand-written fixture: one layout, one set of type rules.
      const fixture = await writeTinyBlip2(tmp('fixture.gguf'), { type });
      assert.deepEqual(table(h), table(await readGgufHeader(fixture.path)));
      const t = h.tensorsByName;
      assert.equal(t.get('v.blk.0.attn_qkv.weight').type, FTYPE[type]);
      assert.equal(t.get('v.blk.0.ffn_down.weight').type, type === 'q8_0' ? GgmlType.F16 : FTYPE[type]); // rows of 48: no q8_0
      assert.equal(t.get('qf.blk.0.cross_k.weight').type, FTYPE[type]); // rows of E = 32
      assert.equal(t.get('qf.blk.0.self_q.weight').type, type === 'f32' ? GgmlType.F32 : GgmlType.F16); // rows of 24
      assert.equal(t.get('v.patch_embd.weight').type, type === 'f32' ? GgmlType.F32 : GgmlType.F16);
      assert.equal(t.get('proj.weight').type, type === 'f32' ? GgmlType.F32 : GgmlType.F16);
      for (const name of ['v.class_embd', 'v.position_embd', 'v.blk.1.attn_qkv.bias', 'qf.query_tokens', 'v.ln_vision.weight', 'proj.bias']) {
        assert.equal(t.get(name).type, GgmlType.F32, name);
      }

      // Values: f32 tensors are copied exactly, in the ggml order of the PyTorch bytes.
      const m = src.model;
      const same = async (gguf, source) => assert.deepEqual(Array.from(await readTensor(out, h, gguf)), Array.from(source), gguf);
      await same('v.class_embd', m['vision_model.embeddings.class_embedding'].data);
      await same('v.position_embd', m['vision_model.embeddings.position_embedding'].data);
      await same('v.blk.1.attn_qkv.bias', m['vision_model.encoder.layers.1.self_attn.qkv.bias'].data);
      await same('qf.query_tokens', m.query_tokens.data);
      if (type === 'f32') {
        await same('v.patch_embd.weight', m['vision_model.embeddings.patch_embedding.weight'].data);
        await same('qf.blk.1.ffn_down.weight', m['qformer.encoder.layer.1.output_query.dense.weight'].data);
        await same('proj.weight', m['language_projection.weight'].data);
      } else {
        await same('proj.weight', Array.from(m['language_projection.weight'].data, f16round));
      }
    });
  }

  test('a sharded HF checkpoint converts to the same bytes as the single file', async () => {
    const src = await hfDir();
    const single = tmp('single.gguf');
    await convertBlip2({ inputs: [src.dir], output: single, type: 'q8_0' });
    const d = tmp('sharded');
    await mkdir(d);
    const names = Object.keys(src.model);
    const half = Math.floor(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)];
    const weightMap = {};
    for (const [i, part] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensors(join(d, file), Object.fromEntries(part.map((n) => [n, src.model[n]])));
      for (const n of part) weightMap[n] = file;
    }
    await writeFile(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    await writeFile(join(d, 'config.json'), JSON.stringify(src.config));
    const sharded = tmp('sharded.gguf');
    await convertBlip2({ inputs: [d], output: sharded, type: 'q8_0' });
    assert.deepEqual(await readFile(sharded), await readFile(single));
  });

  test('LAVIS / MiniGPT-4 .pth files (bare EVA, nested "model" dicts) -> MiniGPT-4 v0 GGUF', async () => {
    const src = await lavisFiles();
    const out = tmp('lavis.gguf');
    const progress = [];
    const result = await convertBlip2({
      inputs: src.files, output: out, type: 'q8_0', visionHeads: 4, qformerHeads: 4, onProgress: (d, t) => progress.push([d, t]),
    });
    const h = await readGgufHeader(out);
    assert.equal(getString(h, 'blip2.prompt_template'), 'minigpt4-v0');
    assert.equal(getF32(h, 'blip2.vision.attention.layer_norm_epsilon'), Math.fround(1e-6));
    assert.equal(getF32(h, 'blip2.vision.ln_vision_epsilon'), Math.fround(1e-5));
    assert.equal(getF32(h, 'blip2.qformer.layer_norm_epsilon'), Math.fround(1e-12));
    assert.equal(getU32(h, 'blip2.qformer.attention.head_count'), 4);
    const fixture = await writeTinyBlip2(tmp('fixture.gguf'), { type: 'q8_0' });
    assert.deepEqual(table(h), table(await readGgufHeader(fixture.path)));
    // EVA's separate q and v biases become [q | 0 | v].
    const E = src.sizes.E;
    const bias = await readTensor(out, h, 'v.blk.0.attn_qkv.bias');
    assert.deepEqual(Array.from(bias.subarray(0, E)), Array.from(src.eva['blocks.0.attn.q_bias'].data));
    assert.ok(bias.subarray(E, 2 * E).every((x) => x === 0));
    assert.deepEqual(Array.from(bias.subarray(2 * E)), Array.from(src.eva['blocks.0.attn.v_bias'].data));
    assert.ok(result.ignored.includes('Qformer.bert.embeddings.word_embeddings.weight'));
    // Progress: once per tensor in order, then done.
    assert.equal(progress.length, result.tensors + 1);
    assert.deepEqual(progress.at(-1), [result.tensors, result.tensors]);
    assert.ok(progress.every(([d], i) => d === Math.min(i, result.tensors)));
  });

  test('MiniGPT-4 Llama 2: no Q-Former, llama_proj over 4 grouped patches, identity ln_vision', async () => {
    const src = await lavisFiles({ patchGroup: true });
    const out = tmp('llama2.gguf');
    await convertBlip2({ inputs: src.files, output: out, type: 'f16', visionHeads: 4 });
    const h = await readGgufHeader(out);
    assert.equal(getString(h, 'blip2.variant'), 'patch_group');
    assert.equal(getString(h, 'blip2.prompt_template'), 'minigpt4-llama2');
    assert.equal(getU32(h, 'blip2.projection.input_group'), 4);
    assert.equal(getU32(h, 'blip2.qformer.block_count'), undefined);
    const fixture = await writeTinyBlip2(tmp('fixture.gguf'), { type: 'f16', variant: 'patch_group' });
    assert.deepEqual(table(h), table(await readGgufHeader(fixture.path)));
    assert.ok((await readTensor(out, h, 'v.ln_vision.weight')).every((x) => x === 1));
    assert.ok((await readTensor(out, h, 'v.ln_vision.bias')).every((x) => x === 0));
  });

  test('real torch.save files convert to the same bytes as the JS-written ones', { skip: TORCH ? false : 'no torch' }, async () => {
    const src = await lavisFiles();
    const l = tinyBlip2('lavis');
    const eva = tmp('eva.pth');
    const blip2 = tmp('blip2.pth');
    const mg = tmp('mg.pth');
    // The ViT in fp16 (as MiniGPT-4 stores it) with a transposed, non-contiguous weight.
    const evaF16 = Object.fromEntries(Object.entries(l.eva).map(([k, t]) => [k, { ...t, dtype: 'F16', transposed: k === 'blocks.0.attn.qkv.weight' }]));
    torchSave(tmp('spec.json'), [
      { path: eva, tensors: evaF16 },
      { path: blip2, tensors: l.blip2, nested: true, protocol: 4 },
      { path: mg, tensors: l.minigpt4, nested: true },
    ]);
    const jsEva = tmp('js-eva.pth');
    await writeTorchZip(jsEva, Object.fromEntries(Object.entries(l.eva).map(([k, t]) => [k, { ...t, dtype: 'F16' }])));
    for (const type of ['f32', 'f16', 'q8_0']) {
      const a = tmp(`torch-${type}.gguf`);
      const b = tmp(`js-${type}.gguf`);
      await convertBlip2({ inputs: [eva, blip2, mg], output: a, type, visionHeads: 4, qformerHeads: 4 });
      await convertBlip2({ inputs: [jsEva, src.files[1], src.files[2]], output: b, type, visionHeads: 4, qformerHeads: 4 });
      assert.deepEqual(await readFile(a), await readFile(b), type);
    }
  });

  test('options override what the inputs imply', async () => {
    const src = await hfDir();
    const out = tmp('o.gguf');
    const r = await convertBlip2({ inputs: [src.dir], output: out, type: 'f32', promptTemplate: 'minigpt4-v0', lnVisionEps: 1e-5, name: 'tiny', visionBlocks: 1 });
    assert.ok(r.ignored.includes('vision_model.encoder.layers.1.mlp.fc1.weight'));
    const h = await readGgufHeader(out);
    assert.equal(getString(h, 'blip2.prompt_template'), 'minigpt4-v0');
    assert.equal(getString(h, 'general.name'), 'tiny');
    assert.equal(getF32(h, 'blip2.vision.ln_vision_epsilon'), Math.fround(1e-5));
    assert.equal(getU32(h, 'blip2.vision.block_count'), 1);
    assert.equal(h.tensorsByName.has('v.blk.1.ln1.weight'), false);
  });

  describe('refusals', () => {
    test('a missing tensor, naming it in both schemes; no file is left behind', async () => {
      const src = await hfDir({}, (m) => { delete m['qformer.encoder.layer.1.output_query.dense.bias']; return m; });
      const out = tmp('missing.gguf');
      await rejectsWith(convertBlip2({ inputs: [src.dir], output: out, type: 'f16' }), 'ERR_MODEL_LOAD',
        /missing tensor Qformer\.bert\.encoder\.layer\.1\.output_query\.dense\.bias \(LAVIS\) or qformer\.encoder\.layer\.1\.output_query\.dense\.bias \(HF\)/);
      assert.equal(existsSync(out), false);
      assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith('.part')), []);
    });

    test('a missing q_bias or v_bias', async () => {
      const src = tinyBlip2('lavis');
      delete src.eva['blocks.1.attn.v_bias'];
      const eva = tmp('eva.pth');
      await writeTorchZip(eva, src.eva);
      const rest = await lavisFiles();
      await rejectsWith(convertBlip2({ inputs: [eva, rest.files[1], rest.files[2]], output: tmp('x.gguf'), visionHeads: 4, qformerHeads: 4 }),
        'ERR_MODEL_LOAD', /missing v_bias for visual_encoder\.blocks\.1\.attn\.q_bias and \.v_bias/);
    });

    test('a wrong shape, naming the tensor and its file', async () => {
      const src = await hfDir({}, (m) => {
        const t = m['vision_model.encoder.layers.1.mlp.fc1.weight'];
        m['vision_model.encoder.layers.1.mlp.fc1.weight'] = { ...t, shape: [t.shape[1], t.shape[0]] };
        return m;
      });
      await rejectsWith(convertBlip2({ inputs: [src.dir], output: tmp('x.gguf') }), 'ERR_MODEL_LOAD',
        /vision_model\.encoder\.layers\.1\.mlp\.fc1\.weight in .*model\.safetensors has shape \[32, 48\], expected \[48, 32\]/);
    });

    test('a non-zero key bias in a fused qkv bias', async () => {
      const src = await hfDir({}, (m) => {
        const t = m['vision_model.encoder.layers.1.self_attn.qkv.bias'];
        const data = Float32Array.from(t.data);
        data[40] = 0.5;
        m['vision_model.encoder.layers.1.self_attn.qkv.bias'] = { ...t, data };
        return m;
      });
      await rejectsWith(convertBlip2({ inputs: [src.dir], output: tmp('x.gguf') }), 'ERR_MODEL_LOAD',
        /vision_model\.encoder\.layers\.1\.self_attn\.qkv\.bias .*non-zero key bias \(element 40/);
    });

    test('a config.json that contradicts the tensors', async () => {
      const hf = tinyBlip2('hf');
      const src = await hfDir({ config: { ...hf.config, qformer_config: { ...hf.config.qformer_config, cross_attention_frequency: 1 } } });
      await rejectsWith(convertBlip2({ inputs: [src.dir], output: tmp('x.gguf') }), 'ERR_MODEL_LOAD', /qformer_config\.cross_attention_frequency is 1, but the tensors say 2/);
    });

    test('head counts that cannot be inferred, and bad options', async () => {
      const src = await lavisFiles();
      const output = tmp('x.gguf');
      await rejectsWith(convertBlip2({ inputs: src.files, output }), 'ERR_INVALID_ARGUMENT', /ViT width 32 is not a multiple of 88; pass visionHeads/);
      await rejectsWith(convertBlip2({ inputs: src.files, output, visionHeads: 5, qformerHeads: 4 }), 'ERR_INVALID_ARGUMENT', /visionHeads 5 does not divide/);
      await rejectsWith(convertBlip2({ inputs: src.files, output, type: 'q4_K' }), 'ERR_INVALID_ARGUMENT', /type/);
      await rejectsWith(convertBlip2({ inputs: [], output }), 'ERR_INVALID_ARGUMENT', /inputs/);
      await rejectsWith(convertBlip2({ inputs: src.files, output, vision_heads: 4 }), 'ERR_INVALID_ARGUMENT', /Unknown option "vision_heads".*visionHeads/);
      await rejectsWith(convertBlip2({ inputs: src.files, output: src.files[0] }), 'ERR_INVALID_ARGUMENT', /also an input/);
      await rejectsWith(convertBlip2({ inputs: [tmp('nope.pth')], output }), 'ERR_MODEL_LOAD', /no such file/);
    });
  });
});

test('blip2TensorType: only matrices are quantized, and only with whole blocks per row', () => {
  assert.equal(blip2TensorType('matrix', 1408, 'q4_0'), GgmlType.Q4_0);
  assert.equal(blip2TensorType('matrix', 6144, 'q5_1'), GgmlType.Q5_1);
  assert.equal(blip2TensorType('matrix', 1400, 'q8_0'), GgmlType.F16);
  assert.equal(blip2TensorType('matrix', 1400, 'f32'), GgmlType.F32);
  assert.equal(blip2TensorType('patch', 14, 'q8_0'), GgmlType.F16);
  assert.equal(blip2TensorType('proj', 768, 'q8_0'), GgmlType.F16);
  assert.equal(blip2TensorType('proj', 768, 'f32'), GgmlType.F32);
  assert.equal(blip2TensorType('f32', 1408, 'f16'), GgmlType.F32);
});

describe('minigpt convert (CLI)', () => {
  const cli = (...args) => spawnSync(process.execPath, [CLI, 'convert', ...args], { encoding: 'utf8' });

  test('converts and reports what it wrote on stderr', async () => {
    const src = await hfDir();
    const out = tmp('cli.gguf');
    const r = cli('--type', 'q8_0', '--template', 'minigpt4-v0', '-o', out, src.dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /wrote .*cli\.gguf: qformer, 77 tensors, .* MiB, 8 image tokens of 64, template minigpt4-v0; ignored 9 unused input tensors/);
    assert.equal(getString(await readGgufHeader(out), 'blip2.prompt_template'), 'minigpt4-v0');
  });

  test('prints one line with the error code on failure', async () => {
    const src = await lavisFiles();
    let r = cli('-o', tmp('x.gguf'), ...src.files);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^minigpt: cannot tell the head count.*pass visionHeads \[ERR_INVALID_ARGUMENT\]\n$/);
    r = cli('--vision-heads', '4', '--qformer-heads', '4', '-o', tmp('x.gguf'), src.files[0], src.files[2]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^minigpt: .*\[ERR_MODEL_LOAD\]\n$/);
    // Mistakes on the command line are usage errors (exit 2), tested by family in test/native/cli.test.js.
    r = cli('--type', 'q3', '-o', tmp('x.gguf'), src.files[0]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^minigpt convert: --type expects 'f32'.* got 'q3'\. See 'minigpt convert --help'\.\n$/);
    r = cli('--bogus', '-o', 'x', 'y');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^minigpt convert: unknown option '--bogus'\. See 'minigpt convert --help'\.\n$/);
    r = cli();
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^minigpt convert: missing -o <out\.gguf> and the inputs/);
  });
});

test('writeTinyBlip2 options: sizes, template, omitted tensors, type fallbacks', async () => {
  const t = await writeTinyBlip2(tmp('t.gguf'), { promptTemplate: 'none', omitTensor: 'proj.bias', imageSize: 56, nQuery: 4, type: 'q8_0' });
  const h = await readGgufHeader(t.path);
  assert.equal(getString(h, 'blip2.prompt_template'), 'none');
  assert.equal(h.tensorsByName.has('proj.bias'), false);
  assert.deepEqual(h.tensorsByName.get('v.position_embd').shape, [32, 17]);
  assert.deepEqual(h.tensorsByName.get('qf.query_tokens').shape, [24, 4]);
  assert.equal(t.nImageTokens, 4);
  assert.equal(h.tensorsByName.get('v.blk.0.attn_qkv.weight').type, GgmlType.Q8_0);
  assert.equal(h.tensorsByName.get('qf.blk.0.ffn_down.weight').type, GgmlType.F16); // rows of 40
  const bias = await readTensor(t.path, h, 'v.blk.0.attn_qkv.bias');
  assert.ok(bias.subarray(32, 64).every((x) => x === 0));
  const pg = await writeTinyBlip2(tmp('pg.gguf'), { variant: 'patch_group', imageSize: 56 });
  assert.equal(pg.nImageTokens, 4);
  assert.deepEqual((await readGgufHeader(pg.path)).tensorsByName.get('proj.weight').shape, [128, 64]);
});
