// The BLIP-2 converter: safetensors and torch.save readers, the data-only unpickler, name
// mapping, hyperparameter inference, refusals, and end-to-end conversions read back as GGUF.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { openSafetensors, openSafetensorsIndex } from '../../dist/convert/safetensors.js';
import { openTorchCheckpoint } from '../../dist/convert/torch-checkpoint.js';
import { unpickle } from '../../dist/convert/pickle.js';
import { mapTensorName, describeSources } from '../../dist/convert/names.js';
import { convertBlip2, blip2TensorType } from '../../dist/convert/blip2.js';
import { readGgufHeader } from '../../dist/gguf/read.js';
import { GgmlType, getArray, getF32, getString, getU32 } from '../../dist/gguf/types.js';
import { f16ToF32, f32ToF16 } from '../../dist/gguf/write.js';
import { hasTorch, tinyBlip2, toBf16, torchSave, writeSafetensors, writeTorchZip } from '../fixtures/checkpoints.js';
import { writeTinyBlip2 } from '../fixtures/blip2.js';
import { readTensor } from '../fixtures/reference-llama.js';

const CLI = fileURLToPath(new URL('../../dist/cli/index.js', import.meta.url));
const TORCH = hasTorch();

let dir;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'minigpt-convert-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });
let counter = 0;
const tmp = (name) => join(dir, `${counter++}-${name}`);

/** Assert that `promise` rejects with a MinigptError of `code` whose message matches `re`. */
async function rejectsWith(promise, code, re) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (re) assert.match(err.message, re);
    return true;
  });
}

const f16round = (x) => f16ToF32(f32ToF16(x));
const bf16round = (x) => { const f = new Float32Array([x]); const u = new Uint32Array(f.buffer); u[0] = toBf16(u[0]) << 16; return f[0]; };
const seq = (n, scale = 0.37) => Float32Array.from({ length: n }, (_, i) => Math.fround((i - n / 2) * scale));

describe('safetensors reader', () => {
  test('reads F32, F16 and BF16 tensors lazily, with their shapes, skipping __metadata__', async () => {
    const p = tmp('a.safetensors');
    await writeSafetensors(p, {
      f32: { dtype: 'F32', shape: [2, 3], data: seq(6) },
      f16: { dtype: 'F16', shape: [4], data: seq(4) },
      bf16: { dtype: 'BF16', shape: [1, 1, 3], data: seq(3) },
    }, { format: 'pt' });
    const ts = await openSafetensors(p);
    assert.deepEqual(ts.map((t) => [t.name, t.dtype, t.shape]), [['f32', 'F32', [2, 3]], ['f16', 'F16', [4]], ['bf16', 'BF16', [1, 1, 3]]]);
    assert.deepEqual(Array.from(await ts[0].read()), Array.from(seq(6)));
    assert.deepEqual(Array.from(await ts[1].read()), Array.from(seq(4), f16round));
    assert.deepEqual(Array.from(await ts[2].read()), Array.from(seq(3), bf16round));
  });

  test('refuses malformed files, naming the file', async () => {
    const short = tmp('short.safetensors');
    await writeFile(short, Buffer.from([1, 2, 3]));
    await rejectsWith(openSafetensors(short), 'ERR_MODEL_LOAD', /short\.safetensors.*8-byte/);

    const huge = tmp('huge.safetensors');
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(1000n);
    await writeFile(huge, b);
    await rejectsWith(openSafetensors(huge), 'ERR_MODEL_LOAD', /header length 1000/);

    const notJson = tmp('nj.safetensors');
    const h = Buffer.alloc(8);
    h.writeBigUInt64LE(4n);
    await writeFile(notJson, Buffer.concat([h, Buffer.from('{{{{')]));
    await rejectsWith(openSafetensors(notJson), 'ERR_MODEL_LOAD', /not JSON/);

    const cut = tmp('cut.safetensors');
    await writeSafetensors(cut, { w: { shape: [64], data: seq(64) } });
    await truncate(cut, 100);
    await rejectsWith(openSafetensors(cut), 'ERR_MODEL_LOAD', /"w" lies past the end/);

    await rejectsWith(openSafetensors(tmp('missing.safetensors')), 'ERR_MODEL_LOAD', /no such file/);
  });

  test('lists integer tensors but refuses to convert them', async () => {
    const p = tmp('int.safetensors');
    await writeSafetensors(p, { ids: { dtype: 'I64', shape: [3], data: [0, 1, 2] } });
    const [t] = await openSafetensors(p);
    assert.equal(t.dtype, 'I64');
    await rejectsWith(t.read(), 'ERR_MODEL_LOAD', /"ids" has element type I64/);
  });

  test('reads sharded checkpoints through model.safetensors.index.json', async () => {
    const d = tmp('sharded');
    await mkdir(d);
    await writeSafetensors(join(d, 'model-00001-of-00002.safetensors'), { a: { shape: [2], data: [1, 2] } });
    await writeSafetensors(join(d, 'model-00002-of-00002.safetensors'), { b: { shape: [3], data: [3, 4, 5] }, extra: { shape: [1], data: [9] } });
    const index = join(d, 'model.safetensors.index.json');
    await writeFile(index, JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }));
    const ts = await openSafetensorsIndex(index);
    assert.deepEqual(ts.map((t) => t.name).sort(), ['a', 'b']);
    assert.deepEqual(Array.from(await ts.find((t) => t.name === 'b').read()), [3, 4, 5]);

    await writeFile(index, JSON.stringify({ weight_map: { a: 'model-00002-of-00002.safetensors' } }));
    await rejectsWith(openSafetensorsIndex(index), 'ERR_MODEL_LOAD', /"a".*does not hold it/);
  });
});

describe('unpickler', () => {
  const hooks = { resolveGlobal: (m, n) => { throw new Error(`refused ${m}.${n}`); }, persistentLoad: () => { throw new Error('no pid'); } };
  const run = (bytes, h = hooks) => unpickle(Uint8Array.from(bytes), h);
  const str = (s) => [0x8c, s.length, ...Buffer.from(s)];

  test('builds dicts, lists, tuples, numbers and strings, with memo references', () => {
    const float = Buffer.alloc(9);
    float[0] = 0x47;
    float.writeDoubleBE(1.5, 1);
    const v = run([
      0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0, // PROTO 4, FRAME
      0x7d, 0x94, 0x28, // EMPTY_DICT, MEMOIZE, MARK
      ...str('ints'), 0x4d, 0x34, 0x12, 0x4a, 0xff, 0xff, 0xff, 0xff, 0x8a, 2, 0x00, 0x80, 0x87, // BININT2, BININT, LONG1, TUPLE3
      ...str('list'), 0x5d, 0x71, 1, 0x28, 0x88, 0x89, 0x4e, 0x65, // EMPTY_LIST BINPUT APPENDS(True, False, None)
      ...str('float'), ...float,
      ...str('again'), 0x68, 1, // BINGET 1 -> the same list
      0x75, 0x2e, // SETITEMS, STOP
    ]);
    assert.ok(v instanceof Map);
    assert.deepEqual(v.get('list'), [true, false, null]);
    assert.equal(v.get('again'), v.get('list'));
    assert.equal(v.get('float'), 1.5);
    assert.deepEqual(v.get('ints'), [0x1234, -1, -32768]);
  });

  test('hands GLOBAL to the caller and refuses what it refuses', () => {
    assert.throws(() => run([0x80, 2, ...Buffer.from('cos\nsystem\n'), 0x2e]), /refused os\.system/);
    const seen = [];
    const v = run([0x80, 2, ...Buffer.from('cmod\nname\n'), 0x29, 0x52, 0x2e], {
      resolveGlobal: (m, n) => { seen.push(`${m}.${n}`); return { qualifiedName: `${m}.${n}`, call: (args) => ({ called: args }) }; },
      persistentLoad: () => null,
    });
    assert.deepEqual(seen, ['mod.name']);
    assert.deepEqual(v, { called: [] });
  });

  test('refuses unknown opcodes, truncated data and calls of non-callables', () => {
    assert.throws(() => run([0x80, 2, 0x69]), /unsupported opcode 0x69/); // INST (protocol 0)
    assert.throws(() => run([0x80, 2, 0x58, 9, 0, 0, 0, 0x41]), /unexpected end/);
    assert.throws(() => run([0x80, 2, 0x4b, 1, 0x29, 0x52, 0x2e]), /cannot call/);
  });
});

describe('torch.save checkpoints written in JS', () => {
  const tensors = { 'layer.weight': { shape: [2, 3], data: seq(6) }, 'layer.bias': { dtype: 'F16', shape: [3], data: seq(3) } };

  for (const opts of [{}, { nested: true }, { zip64: true }, { deflate: true, archive: 'my_model' }]) {
    test(`reads ${JSON.stringify(opts)}`, async () => {
      const p = tmp('c.pth');
      await writeTorchZip(p, tensors, opts);
      const ckpt = await openTorchCheckpoint(p);
      try {
        assert.deepEqual(ckpt.tensors.map((t) => [t.name, t.dtype, t.shape]), [['layer.weight', 'F32', [2, 3]], ['layer.bias', 'F16', [3]]]);
        assert.deepEqual(Array.from(await ckpt.tensors[0].read()), Array.from(seq(6)));
        assert.deepEqual(Array.from(await ckpt.tensors[1].read()), Array.from(seq(3), f16round));
      } finally {
        await ckpt.close();
      }
    });
  }

  test('refuses files that are not torch.save zips', async () => {
    const p = tmp('x.pth');
    await writeFile(p, Buffer.from('hello world'));
    await rejectsWith(openTorchCheckpoint(p), 'ERR_MODEL_LOAD', /not a torch\.save zip/);
    await writeFile(p, Buffer.from([0x80, 0x02, 0x8a, 0x0a]));
    await rejectsWith(openTorchCheckpoint(p), 'ERR_MODEL_LOAD', /legacy/);
    const good = tmp('g.pth');
    await writeTorchZip(good, tensors);
    const bytes = await readFile(good);
    await writeFile(p, bytes.subarray(0, bytes.length - 30));
    await rejectsWith(openTorchCheckpoint(p), 'ERR_MODEL_LOAD', /zip/);
  });
});

describe('torch.save checkpoints from PyTorch', { skip: TORCH ? false : '/usr/bin/python3 cannot import torch' }, () => {
  const a = { shape: [3, 4], data: seq(12) };
  let files;
  before(() => {
    files = {
      f32: { path: tmp('f32.pth'), tensors: { a, b: { shape: [5], data: seq(5, 1) } } },
      half: { path: tmp('half.pth'), tensors: { a: { ...a, dtype: 'F16' }, bf: { ...a, dtype: 'BF16' } }, nested: true },
      strided: { path: tmp('strided.pth'), tensors: { a: { ...a, transposed: true } } },
      proto4: { path: tmp('p4.pth'), tensors: { a, position_ids: { dtype: 'I64', shape: [1, 4], data: [0, 1, 2, 3] } }, protocol: 4, nested: true },
      legacy: { path: tmp('legacy.pth'), tensors: { a }, legacy: true },
      evil: { path: tmp('evil.pth'), tensors: { a }, evil: true },
      deflate: { path: tmp('deflate.pth'), tensors: { a }, deflate: true },
    };
    torchSave(tmp('spec.json'), Object.values(files));
  });
  const values = async (path) => {
    const c = await openTorchCheckpoint(path);
    try {
      return Object.fromEntries(await Promise.all(c.tensors.map(async (t) => [t.name, { shape: t.shape, dtype: t.dtype, values: t.dtype === 'I64' ? null : Array.from(await t.read()) }])));
    } finally {
      await c.close();
    }
  };

  test('fp32 state dict', async () => {
    const v = await values(files.f32.path);
    assert.deepEqual(v.a, { shape: [3, 4], dtype: 'F32', values: Array.from(seq(12)) });
    assert.deepEqual(v.b.values, Array.from(seq(5, 1)));
  });

  test('fp16 and bf16 tensors nested under "model" next to a config dict', async () => {
    const v = await values(files.half.path);
    assert.deepEqual(Object.keys(v), ['a', 'bf']);
    assert.deepEqual(v.a.values, Array.from(seq(12), f16round));
    assert.equal(v.bf.dtype, 'BF16');
    assert.deepEqual(v.bf.values, Array.from(seq(12), bf16round));
  });

  test('a non-contiguous (transposed) tensor comes back in row-major order', async () => {
    const v = await values(files.strided.path);
    assert.deepEqual(v.a, { shape: [3, 4], dtype: 'F32', values: Array.from(seq(12)) });
  });

  test('pickle protocol 4, and integer buffers that parse but do not convert', async () => {
    const c = await openTorchCheckpoint(files.proto4.path);
    try {
      assert.deepEqual(Array.from(await c.tensors[0].read()), Array.from(seq(12)));
      const ids = c.tensors.find((t) => t.name === 'position_ids');
      assert.equal(ids.dtype, 'I64');
      await rejectsWith(ids.read(), 'ERR_MODEL_LOAD', /position_ids.*I64/);
    } finally {
      await c.close();
    }
  });

  test('DEFLATE-compressed entries', async () => {
    assert.deepEqual((await values(files.deflate.path)).a.values, Array.from(seq(12)));
  });

  test('refuses the legacy format and pickles that name other Python objects', async () => {
    await rejectsWith(openTorchCheckpoint(files.legacy.path), 'ERR_MODEL_LOAD', /legacy/);
    await rejectsWith(openTorchCheckpoint(files.evil.path), 'ERR_MODEL_LOAD', /posix\.system.*nothing in a checkpoint is executed/);
  });
});

describe('name mapping', () => {
  const cases = {
    // HF
    'vision_model.embeddings.patch_embedding.weight': 'v.patch_embd.weight',
    'vision_model.embeddings.class_embedding': 'v.class_embd',
    'vision_model.embeddings.position_embedding': 'v.position_embd',
    'vision_model.encoder.layers.7.layer_norm1.bias': 'v.blk.7.ln1.bias',
    'vision_model.encoder.layers.7.self_attn.qkv.weight': 'v.blk.7.attn_qkv.weight',
    'vision_model.encoder.layers.7.self_attn.qkv.bias': 'v.blk.7.attn_qkv.bias',
    'vision_model.encoder.layers.7.self_attn.projection.weight': 'v.blk.7.attn_out.weight',
    'vision_model.encoder.layers.38.mlp.fc2.bias': 'v.blk.38.ffn_down.bias',
    'vision_model.post_layernorm.weight': 'v.ln_vision.weight',
    'qformer.layernorm.bias': 'qf.ln_emb.bias',
    'qformer.embeddings.layernorm.weight': 'qf.ln_emb.weight',
    'qformer.encoder.layer.3.attention.attention.key.weight': 'qf.blk.3.self_k.weight',
    'qformer.encoder.layer.3.attention.output.LayerNorm.weight': 'qf.blk.3.self_ln.weight',
    'qformer.encoder.layer.4.crossattention.attention.value.bias': 'qf.blk.4.cross_v.bias',
    'qformer.encoder.layer.4.crossattention.output.dense.weight': 'qf.blk.4.cross_out.weight',
    'qformer.encoder.layer.11.intermediate_query.dense.weight': 'qf.blk.11.ffn_up.weight',
    'qformer.encoder.layer.11.output_query.LayerNorm.bias': 'qf.blk.11.ffn_ln.bias',
    query_tokens: 'qf.query_tokens',
    'language_projection.weight': 'proj.weight',
    // LAVIS / MiniGPT-4
    'visual_encoder.cls_token': 'v.class_embd',
    'visual_encoder.pos_embed': 'v.position_embd',
    'visual_encoder.patch_embed.proj.bias': 'v.patch_embd.bias',
    'visual_encoder.blocks.5.norm2.weight': 'v.blk.5.ln2.weight',
    'visual_encoder.blocks.5.attn.proj.bias': 'v.blk.5.attn_out.bias',
    'visual_encoder.blocks.5.mlp.fc1.weight': 'v.blk.5.ffn_up.weight',
    'ln_vision.bias': 'v.ln_vision.bias',
    'Qformer.bert.embeddings.LayerNorm.weight': 'qf.ln_emb.weight',
    'Qformer.bert.encoder.layer.0.attention.self.query.bias': 'qf.blk.0.self_q.bias',
    'Qformer.bert.encoder.layer.0.attention.output.dense.weight': 'qf.blk.0.self_out.weight',
    'Qformer.bert.encoder.layer.0.crossattention.self.key.weight': 'qf.blk.0.cross_k.weight',
    'Qformer.bert.encoder.layer.0.crossattention.output.LayerNorm.bias': 'qf.blk.0.cross_ln.bias',
    'Qformer.bert.encoder.layer.9.output_query.dense.weight': 'qf.blk.9.ffn_down.weight',
    'llama_proj.bias': 'proj.bias',
    // bare EVA (eva_vit_g.pth)
    cls_token: 'v.class_embd',
    'blocks.38.attn.qkv.weight': 'v.blk.38.attn_qkv.weight',
  };
  test('maps HF, LAVIS and bare EVA names onto the GGUF layout', () => {
    for (const [from, to] of Object.entries(cases)) assert.equal(mapTensorName(from)?.target, to, from);
    assert.deepEqual(mapTensorName('visual_encoder.blocks.2.attn.q_bias'), { target: 'v.blk.2.attn_qkv.bias', part: 'q', scheme: 'lavis' });
    assert.deepEqual(mapTensorName('blocks.2.attn.v_bias'), { target: 'v.blk.2.attn_qkv.bias', part: 'v', scheme: 'eva' });
    assert.equal(mapTensorName('vision_model.encoder.layers.0.self_attn.qkv.weight').scheme, 'hf');
  });
  test('ignores what the image path does not use', () => {
    for (const name of [
      'Qformer.bert.embeddings.word_embeddings.weight', 'Qformer.bert.embeddings.position_ids', 'qformer.embeddings.word_embeddings.weight',
      'Qformer.bert.encoder.layer.0.intermediate.dense.weight', 'Qformer.bert.encoder.layer.0.output.dense.bias',
      'qformer.encoder.layer.0.output.LayerNorm.weight', 'Qformer.cls.predictions.bias', 'language_model.lm_head.weight',
      'llama_model.model.embed_tokens.weight', 'norm.weight', 'head.weight', 'vision_proj.weight', 'temp',
    ]) assert.equal(mapTensorName(name), undefined, name);
  });
  test('describes the checkpoint names of a GGUF tensor for messages', () => {
    assert.equal(describeSources('v.blk.3.ffn_up.weight'), 'visual_encoder.blocks.3.mlp.fc1.weight (LAVIS) or vision_model.encoder.layers.3.mlp.fc1.weight (HF)');
    assert.equal(describeSources('qf.query_tokens'), 'query_tokens');
  });
});

// ---- end to end ----

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
