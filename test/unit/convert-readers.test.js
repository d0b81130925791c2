// The BLIP-2 converter's checkpoint readers: safetensors (single and sharded), torch.save
// zips written in JS and by PyTorch, and the data-only unpickler.
import { test, describe, before, after } from 'node:test';
import { rejectsWith } from '../assertions.js';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openSafetensors, openSafetensorsIndex } from '../../dist/convert/safetensors.js';
import { openTorchCheckpoint } from '../../dist/convert/torch-checkpoint.js';
import { unpickle } from '../../dist/convert/pickle.js';
import { ZipArchive } from '../../dist/convert/zip.js';
import { readExactly } from '../../dist/convert/file-range.js';
import { f16ToF32, f32ToF16 } from '../../dist/gguf/write.js';
import { hasTorch, toBf16, torchSave, writeSafetensors, writeTorchZip, zipBytes } from '../../tools/fixtures/checkpoints.js';

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

describe('zip reader against hostile archives', () => {
  // Each case writes a well-formed archive from zipBytes and a copy with one field
  // falsified, so a test fails both when the reader refuses good files and when it
  // trusts the bad field.
  const goodAndHostile = async (entries, opts, falsify) => {
    const good = zipBytes(entries, opts);
    const hostile = Buffer.from(good);
    falsify(hostile);
    const paths = [tmp('good.zip'), tmp('hostile.zip')];
    await writeFile(paths[0], good);
    await writeFile(paths[1], hostile);
    return paths;
  };
  // Where `name`'s central-directory header starts, in a zip from zipBytes (no comment).
  const centralHeader = (zip, name) => {
    const eocd = zip.length - 22;
    let p = zip.readUInt32LE(eocd + 16);
    if (p === 0xffffffff) p = Number(zip.readBigUInt64LE(eocd - 20 - 56 + 48));
    while (zip.readUInt32LE(p) === 0x02014b50) {
      const nameLen = zip.readUInt16LE(p + 28);
      if (zip.toString('utf8', p + 46, p + 46 + nameLen) === name) return p;
      p += 46 + nameLen + zip.readUInt16LE(p + 30) + zip.readUInt16LE(p + 32);
    }
    throw new Error(`no central header for ${name}`);
  };
  const readEntry = async (path, name) => {
    const zip = await ZipArchive.open(path);
    try {
      return Buffer.from(await zip.read(zip.entries.get(name)));
    } finally {
      await zip.close();
    }
  };

  test('refuses a STORED entry that declares more bytes than it stores', async () => {
    const entries = [{ name: 'archive/byteorder', data: Buffer.from('little') }, { name: 'archive/secret', data: Buffer.from('NEIGHBOUR-BYTES'.repeat(4)) }];
    const [good, hostile] = await goodAndHostile(entries, {}, (z) => z.writeUInt32LE(64, centralHeader(z, 'archive/byteorder') + 24));
    assert.equal((await readEntry(good, 'archive/byteorder')).toString(), 'little');
    await rejectsWith(ZipArchive.open(hostile), 'ERR_MODEL_LOAD', /"archive\/byteorder" is stored uncompressed but declares 64 bytes in 6/);
  });

  test('stops inflating a DEFLATE entry at its declared size (zip bomb)', async () => {
    const bomb = Buffer.alloc(4 << 20);
    const [good, hostile] = await goodAndHostile([{ name: 'archive/data.pkl', data: bomb }], { deflate: true },
      (z) => z.writeUInt32LE(6, centralHeader(z, 'archive/data.pkl') + 24));
    assert.equal((await readEntry(good, 'archive/data.pkl')).length, bomb.length);
    await assert.rejects(readEntry(hostile, 'archive/data.pkl'), (err) => {
      assert.equal(err.code, 'ERR_MODEL_LOAD');
      assert.match(err.message, /"archive\/data\.pkl" does not inflate to its declared 6 bytes/);
      // Inflating stopped at the declared size instead of producing all 4 MiB first.
      assert.equal(err.cause?.code, 'ERR_BUFFER_TOO_LARGE');
      assert.doesNotMatch(err.message, new RegExp(String(bomb.length)));
      return true;
    });
  });

  test('refuses a zip64 field too short for the sizes it must hold', async () => {
    // The central zip64 field holds three values; cutting its length to 8 leaves only the
    // uncompressed size, and zeroing the rest keeps the next read from finding the others.
    const [good, hostile] = await goodAndHostile([{ name: 'archive/byteorder', data: Buffer.from('little') }], { zip64: true }, (z) => {
      const extra = centralHeader(z, 'archive/byteorder') + 46 + 'archive/byteorder'.length;
      z.writeUInt16LE(8, extra + 2);
      z.fill(0, extra + 12, extra + 28);
    });
    assert.equal((await readEntry(good, 'archive/byteorder')).toString(), 'little');
    await rejectsWith(ZipArchive.open(hostile), 'ERR_MODEL_LOAD', /zip64 field of "archive\/byteorder" is too short/);
  });

  test('wraps a damaged DEFLATE stream in a typed error naming the entry', async () => {
    const name = 'archive/data.pkl';
    const [good, hostile] = await goodAndHostile([{ name, data: Buffer.from('x'.repeat(1000)) }], { deflate: true },
      (z) => { z[30 + name.length] |= 0b110; }); // block type 3 is reserved: "invalid block type"
    assert.equal((await readEntry(good, name)).toString(), 'x'.repeat(1000));
    await rejectsWith(readEntry(hostile, name), 'ERR_MODEL_LOAD', /"archive\/data\.pkl" does not inflate.*damaged/);
  });

  test('refuses a zip64 end record that lies outside the file', async () => {
    const [good, hostile] = await goodAndHostile([{ name: 'archive/byteorder', data: Buffer.from('little') }], { zip64: true },
      (z) => z.writeBigUInt64LE(1n << 62n, z.length - 22 - 20 + 8));
    assert.equal((await readEntry(good, 'archive/byteorder')).toString(), 'little');
    await rejectsWith(ZipArchive.open(hostile), 'ERR_MODEL_LOAD', /zip64 end-of-central-directory record lies past the end of the file/);
  });

  test('readExactly refuses offsets that FileHandle.read would misread', async () => {
    const p = tmp('range.bin');
    await writeFile(p, 'hello world');
    const fh = await open(p, 'r');
    try {
      assert.equal(Buffer.from(await readExactly(fh, 6, 5, 'range.bin')).toString(), 'world');
      // Past 2^53 the position is rounded and read from elsewhere; -1 means "current position".
      for (const [position, length] of [[2 ** 53, 5], [Number.MAX_SAFE_INTEGER - 2, 5], [-1, 5], [0.5, 5], [0, -1]]) {
        await rejectsWith(readExactly(fh, position, length, 'range.bin'), 'ERR_MODEL_LOAD', /range\.bin: a read of .* lies outside any file/, `${position}+${length}`);
      }
    } finally {
      await fh.close();
    }
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
