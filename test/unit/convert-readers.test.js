// The BLIP-2 converter's checkpoint readers: safetensors (single and sharded), torch.save
// zips written in JS and by PyTorch, and the data-only unpickler.
import { test, describe, before, after } from 'node:test';
import { rejectsWith } from '../assertions.js';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openSafetensors, openSafetensorsIndex } from '../../dist/convert/safetensors.js';
import { openTorchCheckpoint } from '../../dist/convert/torch-checkpoint.js';
import { unpickle } from '../../dist/convert/pickle.js';
import { f16ToF32, f32ToF16 } from '../../dist/gguf/write.js';
import { hasTorch, toBf16, torchSave, writeSafetensors, writeTorchZip } from '../../tools/fixtures/checkpoints.js';

const TORCH = hasTorch();

let dir;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'minigpt-convert-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });
let counter = 0;
const tmp = (name) => join(dir, `${counter++}-${name}`);

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
