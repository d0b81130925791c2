// GGUF reader and writer: round trips, refusal of malformed files, quantizer exactness.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile, readFile, truncate, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { readGgufHeader, GgufFormatError } from '../../dist/gguf/read.js';
import { writeGguf, kv, f32ToF16, f16ToF32 } from '../../dist/gguf/write.js';
import { encodeTensorData, decodeTensorData } from '../../dist/gguf/quant.js';
import {
  GgmlType, GgufValueType, getArray, getBool, getF32, getNumber, getString, getU32, tensorByteSize,
} from '../../dist/gguf/types.js';
import { RawGguf } from '../fixtures/craft.js';
import { readTensor } from '../fixtures/reference-llama.js';

let dir;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'minigpt-gguf-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

let counter = 0;
const tmp = (name = 'f.gguf') => join(dir, `${counter++}-${name}`);

async function writeBytes(bytes) {
  const p = tmp();
  await writeFile(p, bytes);
  return p;
}

/** Assert that reading `path` fails with a GgufFormatError of `reason`; returns the error. */
async function rejectsWith(path, reason, options) {
  let caught;
  try {
    await readGgufHeader(path, options);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof GgufFormatError, `expected GgufFormatError(${reason}), got ${caught}`);
  assert.equal(caught.reason, reason, caught.message);
  assert.equal(caught.name, 'GgufFormatError');
  assert.ok(caught instanceof Error);
  assert.ok(caught.message.includes(path), 'message names the file');
  return caught;
}

function ramp(n, f = (i) => Math.sin(i * 0.37) * 2) {
  return Float32Array.from({ length: n }, (_, i) => f(i));
}

describe('round trip', () => {
  test('every metadata type and writable tensor type survives write -> read', async () => {
    const p = tmp();
    const metadata = [
      kv.str('general.architecture', 'llama'),
      kv.u8('t.u8', 255), kv.i8('t.i8', -128), kv.u16('t.u16', 65535), kv.i16('t.i16', -32768),
      kv.u32('t.u32', 0xffffffff), kv.i32('t.i32', -2147483648), kv.f32('t.f32', 0.1), kv.f64('t.f64', 0.1),
      kv.bool('t.true', true), kv.bool('t.false', false), kv.u64('t.u64', 2n ** 64n - 1n), kv.i64('t.i64', -(2n ** 63n)),
      kv.str('t.unicode', 'héllo ▁ 日本語 \u{1F600}'), kv.str('t.empty', ''),
      kv.strArray('t.strs', ['a', '', 'ü', '<0x0A>']), kv.f32Array('t.f32s', [1.5, -2, 0.1]),
      kv.i32Array('t.i32s', [-1, 0, 1]), kv.u32Array('t.u32s', [0, 7]), kv.strArray('t.none', []),
    ];
    const shapes = { [GgmlType.F32]: [5, 3], [GgmlType.F16]: [7], [GgmlType.Q8_0]: [64, 2], [GgmlType.Q4_0]: [32, 3, 2], [GgmlType.Q4_1]: [32], [GgmlType.Q5_0]: [96], [GgmlType.Q5_1]: [32, 1, 1, 2] };
    const tensors = Object.entries(shapes).map(([type, shape]) => ({
      name: `t.${type}`, type: Number(type), shape, data: ramp(shape.reduce((a, b) => a * b, 1)),
    }));
    await writeGguf(p, { metadata, tensors });

    const h = await readGgufHeader(p);
    assert.equal(h.version, 3);
    assert.equal(h.alignment, 32);
    assert.equal(h.fileSize, (await stat(p)).size);
    assert.equal(h.metadata.size, metadata.length);
    for (const e of metadata) {
      const got = h.metadata.get(e.key);
      assert.equal(got.type, e.type, e.key);
      assert.equal(got.arrayType, e.arrayType, e.key);
      const want = e.type === GgufValueType.FLOAT32 ? Math.fround(e.value)
        : e.arrayType === GgufValueType.FLOAT32 ? e.value.map(Math.fround) : e.value;
      assert.deepEqual(got.value, want, e.key);
    }
    assert.equal(h.tensors.length, tensors.length);
    assert.equal(h.dataOffset % 32, 0);
    let expectedOffset = 0n;
    for (const [i, t] of h.tensors.entries()) {
      assert.equal(t.name, tensors[i].name);
      assert.equal(t.type, tensors[i].type);
      assert.deepEqual(t.shape, tensors[i].shape);
      assert.equal(t.offset, expectedOffset);
      assert.equal(t.byteSize, tensorByteSize(t.type, t.shape));
      assert.equal(h.tensorsByName.get(t.name), t);
      expectedOffset += BigInt(Math.ceil(t.byteSize / 32) * 32);
      const back = await readTensor(p, h, t.name);
      const tol = t.type === GgmlType.F32 ? 0 : t.type === GgmlType.F16 ? 2e-3 : 0.3;
      back.forEach((v, j) => assert.ok(Math.abs(v - tensors[i].data[j]) <= tol, `${t.name}[${j}]: ${v} vs ${tensors[i].data[j]}`));
    }
  });

  test('typed getters return undefined for missing keys and wrong types', async () => {
    const p = tmp();
    await writeGguf(p, { metadata: [kv.u32('a', 7), kv.i32('b', -3), kv.f32('c', 0.5), kv.u64('d', 2n ** 60n), kv.u64('e', 12), kv.bool('f', true), kv.str('g', 'x'), kv.f32Array('h', [1, 2, 3])], tensors: [] });
    const h = await readGgufHeader(p);
    assert.equal(getU32(h, 'a'), 7);
    assert.equal(getU32(h, 'b'), undefined);
    assert.equal(getU32(h, 'zzz'), undefined);
    assert.equal(getNumber(h, 'b'), -3);
    assert.equal(getNumber(h, 'e'), 12);
    assert.equal(getNumber(h, 'd'), undefined, 'u64 beyond 2^53 is not silently rounded');
    assert.equal(getNumber(h, 'g'), undefined);
    assert.equal(getF32(h, 'c'), 0.5);
    assert.equal(getF32(h, 'a'), undefined);
    assert.equal(getBool(h, 'f'), true);
    assert.equal(getString(h, 'g'), 'x');
    assert.equal(getString(h, 'a'), undefined);
    assert.deepEqual(getArray(h, 'h'), [1, 2, 3]);
    assert.deepEqual(getArray(h, 'h', GgufValueType.FLOAT32), [1, 2, 3]);
    assert.equal(getArray(h, 'h', GgufValueType.INT32), undefined);
    assert.equal(getArray(h, 'g'), undefined);
  });

  test('custom alignment is written as general.alignment and honoured', async () => {
    const p = tmp();
    await writeGguf(p, { metadata: [kv.str('x', 'y')], tensors: [{ name: 'a', type: GgmlType.F32, shape: [3], data: ramp(3) }, { name: 'b', type: GgmlType.F32, shape: [5], data: ramp(5) }], alignment: 64 });
    const h = await readGgufHeader(p);
    assert.equal(getU32(h, 'general.alignment'), 64);
    assert.equal(h.alignment, 64);
    assert.equal(h.dataOffset % 64, 0);
    assert.equal(h.tensors[1].offset, 64n);
  });

  test('a file without tensors has its data section right after the header (no padding)', async () => {
    const p = tmp();
    await writeGguf(p, { metadata: [kv.str('k', 'abc')], tensors: [] });
    const h = await readGgufHeader(p);
    assert.equal(h.dataOffset, h.fileSize);
    assert.equal(h.tensors.length, 0);
  });

  test('lazy (sync and async) tensor data is pulled one tensor at a time', async () => {
    const p = tmp();
    const calls = [];
    await writeGguf(p, {
      metadata: [],
      tensors: [
        { name: 'a', type: GgmlType.F32, shape: [4], data: () => { calls.push('a'); return ramp(4); } },
        { name: 'b', type: GgmlType.Q8_0, shape: [32], data: async () => { calls.push('b'); return ramp(32); } },
      ],
    });
    assert.deepEqual(calls, ['a', 'b']);
    assert.equal((await readGgufHeader(p)).tensors.length, 2);
  });

  test('a tensor whose data has the wrong length fails and leaves no partial file', async () => {
    const p = tmp();
    await assert.rejects(writeGguf(p, { metadata: [], tensors: [{ name: 'a', type: GgmlType.F32, shape: [4, 2], data: ramp(7) }] }), /8 values/);
    await assert.rejects(stat(p), { code: 'ENOENT' });
  });

  test('the writer refuses what llama.cpp would refuse', async () => {
    const t = (over) => ({ name: 'a', type: GgmlType.F32, shape: [32], data: ramp(32), ...over });
    await assert.rejects(writeGguf(tmp(), { metadata: [], tensors: [t({ type: GgmlType.Q8_0, shape: [16], data: ramp(16) })] }), /multiple of 32/);
    await assert.rejects(writeGguf(tmp(), { metadata: [], tensors: [t(), t()] }), /duplicate tensor/);
    await assert.rejects(writeGguf(tmp(), { metadata: [], tensors: [t({ name: 'x'.repeat(64) })] }), /1\.\.63 bytes/);
    await assert.rejects(writeGguf(tmp(), { metadata: [], tensors: [t({ type: GgmlType.Q4_K, shape: [256], data: ramp(256) })] }), /cannot write/);
    await assert.rejects(writeGguf(tmp(), { metadata: [], tensors: [t({ shape: [2, 2, 2, 2, 2], data: ramp(32) })] }), /1\.\.4/);
    await assert.rejects(writeGguf(tmp(), { metadata: [kv.u32('a', 1), kv.u32('a', 2)], tensors: [] }), /duplicate metadata key/);
    await assert.rejects(writeGguf(tmp(), { metadata: [kv.u32('a', -1)], tensors: [] }), /not a valid UINT32/);
    await assert.rejects(writeGguf(tmp(), { metadata: [kv.u32('a', 1.5)], tensors: [] }), /not a valid UINT32/);
    await assert.rejects(writeGguf(tmp(), { metadata: [kv.i32Array('a', [1, 2 ** 31])], tensors: [] }), /not a valid INT32/);
    await assert.rejects(writeGguf(tmp(), { metadata: [], tensors: [], alignment: 48 }), /power of two/);
  });

  test('GGUF version 2 files are read too', async () => {
    const bytes = RawGguf.start({ version: 2, nKv: 1, nTensors: 1 })
      .kv('general.architecture', GgufValueType.STRING, (w) => w.str('llama'))
      .tensor('w', [8], GgmlType.F32, 0);
    bytes.pad(32).raw(Buffer.alloc(32));
    const h = await readGgufHeader(await writeBytes(bytes.bytes()));
    assert.equal(h.version, 2);
    assert.equal(getString(h, 'general.architecture'), 'llama');
    assert.equal(h.tensors[0].byteSize, 32);
  });
});

describe('real files', () => {
  const models = fileURLToPath(new URL('../../deps/llama.cpp/models/', import.meta.url));
  test('reads the vocabulary GGUFs shipped with llama.cpp (written by gguf-py)', { skip: !existsSync(models) && 'deps/llama.cpp not fetched' }, async () => {
    const files = readdirSync(models).filter((f) => f.endsWith('.gguf'));
    assert.ok(files.length > 0);
    for (const f of files) {
      const h = await readGgufHeader(join(models, f));
      const tokens = getArray(h, 'tokenizer.ggml.tokens', GgufValueType.STRING);
      assert.ok(tokens && tokens.length > 1000, f);
      assert.ok(getString(h, 'general.architecture'), f);
    }
  });
});

describe('refusing malformed files', () => {
  // A small valid file to cut and corrupt: two keys (one an array), two tensors.
  async function validFile() {
    const p = tmp();
    await writeGguf(p, {
      metadata: [kv.str('general.architecture', 'llama'), kv.strArray('tokenizer.ggml.tokens', ['a', 'bb', 'ccc'])],
      tensors: [{ name: 'w0', type: GgmlType.F32, shape: [8, 2], data: ramp(16) }, { name: 'w1', type: GgmlType.Q8_0, shape: [32], data: ramp(32) }],
    });
    return p;
  }

  test('a missing file rejects with the original ENOENT error', async () => {
    await assert.rejects(readGgufHeader(join(dir, 'does-not-exist.gguf')), (err) => err.code === 'ENOENT' && !(err instanceof GgufFormatError));
  });

  test('a directory is not-a-file', async () => {
    const d = join(dir, 'a-dir.gguf');
    await mkdir(d);
    const err = await rejectsWith(d, 'not-a-file');
    assert.match(err.message, /directory/);
  });

  test('a 0-byte file is empty', async () => {
    const err = await rejectsWith(await writeBytes(Buffer.alloc(0)), 'empty');
    assert.match(err.message, /0 bytes/);
  });

  test('wrong magic says "not a GGUF file", and names the old GGML formats', async () => {
    let err = await rejectsWith(await writeBytes(Buffer.from('hello world, not a model')), 'bad-magic');
    assert.match(err.message, /not a GGUF file/);
    for (const [magic, name] of [[0x67676a74, 'GGJT'], [0x67676d6c, 'GGML'], [0x67676d66, 'GGMF']]) {
      const b = Buffer.alloc(64);
      b.writeUInt32LE(magic, 0);
      err = await rejectsWith(await writeBytes(b), 'bad-magic');
      assert.match(err.message, /not a GGUF file/);
      assert.ok(err.message.includes(name), err.message);
    }
    err = await rejectsWith(await writeBytes(Buffer.from('<!DOCTYPE html><html>Sign in</html>')), 'bad-magic');
    assert.match(err.message, /HTML/);
    err = await rejectsWith(await writeBytes(Buffer.from('version https://git-lfs.github.com/spec/v1\noid sha256:abc\n')), 'bad-magic');
    assert.match(err.message, /Git LFS/);
    const st = Buffer.alloc(40);
    st.writeBigUInt64LE(20n, 0);
    st.write('{"__metadata__":{}}', 8);
    err = await rejectsWith(await writeBytes(st), 'bad-magic');
    assert.match(err.message, /safetensors/);
    err = await rejectsWith(await writeBytes(Buffer.from('PK\x03\x04rest of a zip', 'latin1')), 'bad-magic');
    assert.match(err.message, /ZIP/);
  });

  test('a file shorter than the magic is truncated when it starts like GGUF', async () => {
    await rejectsWith(await writeBytes(Buffer.from('GGU')), 'truncated');
    await rejectsWith(await writeBytes(Buffer.from('XY')), 'bad-magic');
  });

  test('only versions 2 and 3 are accepted', async () => {
    for (const [version, pattern] of [[1, /version 1/], [4, /newer/], [0, /not valid/], [0x03000000, /big-endian/]]) {
      const err = await rejectsWith(await writeBytes(RawGguf.start({ version }).bytes()), 'unsupported-version');
      assert.match(err.message, pattern);
    }
  });

  test('truncation anywhere in the header is reported as truncated', async () => {
    const p = await validFile();
    const full = await readFile(p);
    const h = await readGgufHeader(p);
    // 24 (magic, version, counts) + 45 + 75 (the two keys) + 42 + 34 (the two tensor infos)
    const headerEnd = 220;
    assert.equal(h.dataOffset, 224, 'header length formula matches the file');
    const cut = tmp();
    for (let n = 1; n < headerEnd; n++) {
      await writeFile(cut, full.subarray(0, n));
      await rejectsWith(cut, 'truncated');
    }
  });

  test('truncation inside the tensor data is tensor-out-of-bounds', async () => {
    const p = await validFile();
    const h = await readGgufHeader(p);
    const last = h.tensors[1];
    await truncate(p, h.dataOffset + Number(last.offset) + last.byteSize - 1);
    const err = await rejectsWith(p, 'tensor-out-of-bounds');
    assert.match(err.message, /w1/);
  });

  test('absurd counts are bad-count, without allocating for them', async () => {
    await rejectsWith(await writeBytes(RawGguf.start({ nTensors: 2n ** 62n }).bytes()), 'bad-count');
    await rejectsWith(await writeBytes(RawGguf.start({ nKv: -1 }).bytes()), 'bad-count');
    const arr = RawGguf.start({ nKv: 1 }).str('k').i32(GgufValueType.ARRAY).i32(GgufValueType.UINT8).u64(2n ** 40n).raw(Buffer.alloc(16));
    await rejectsWith(await writeBytes(arr.bytes()), 'bad-count');
    const dims = RawGguf.start({ nTensors: 1 }).str('t').u32(5).raw(Buffer.alloc(64));
    const err = await rejectsWith(await writeBytes(dims.bytes()), 'bad-count');
    assert.match(err.message, /5 dimensions/);
  });

  test('plausible counts that cannot fit in the file are truncated, checked before allocating', async () => {
    await rejectsWith(await writeBytes(RawGguf.start({ nKv: 1000000 }).kv('a', GgufValueType.UINT8, (w) => w.u8(1)).bytes()), 'truncated');
    const arr = RawGguf.start({ nKv: 1 }).str('k').i32(GgufValueType.ARRAY).i32(GgufValueType.STRING).u64(500000000).raw(Buffer.alloc(16));
    await rejectsWith(await writeBytes(arr.bytes()), 'truncated');
  });

  test('absurd string lengths are bad-string; lengths past the end are truncated', async () => {
    await rejectsWith(await writeBytes(RawGguf.start({ nKv: 1 }).str('k', 2n ** 40n).bytes()), 'bad-string');
    const val = RawGguf.start({ nKv: 1 }).str('k').i32(GgufValueType.STRING).str('v', 2n ** 63n);
    await rejectsWith(await writeBytes(val.bytes()), 'bad-string');
    await rejectsWith(await writeBytes(RawGguf.start({ nKv: 1 }).str('k', 1000).raw(Buffer.alloc(20)).bytes()), 'truncated');
  });

  test('unknown value types and tensor types are bad-type', async () => {
    await rejectsWith(await writeBytes(RawGguf.start({ nKv: 1 }).str('k').i32(13).raw(Buffer.alloc(8)).bytes()), 'bad-type');
    await rejectsWith(await writeBytes(RawGguf.start({ nKv: 1 }).str('k').i32(-1).raw(Buffer.alloc(8)).bytes()), 'bad-type');
    const nested = RawGguf.start({ nKv: 1 }).str('k').i32(GgufValueType.ARRAY).i32(GgufValueType.ARRAY).u64(0);
    await rejectsWith(await writeBytes(nested.bytes()), 'bad-type');
    for (const type of [4, 31, 43, 99]) {
      const t = RawGguf.start({ nTensors: 1 }).tensor('t', [32], type, 0).pad(32).raw(Buffer.alloc(64));
      const err = await rejectsWith(await writeBytes(t.bytes()), 'bad-type');
      assert.match(err.message, new RegExp(`ggml type ${type}`));
    }
  });

  test('tensor data past the end of the file is tensor-out-of-bounds', async () => {
    const far = RawGguf.start({ nTensors: 1 }).tensor('t', [8], GgmlType.F32, 2n ** 40n).pad(32).raw(Buffer.alloc(32));
    await rejectsWith(await writeBytes(far.bytes()), 'tensor-out-of-bounds');
    const huge = RawGguf.start({ nTensors: 1 }).tensor('t', [2 ** 20, 2 ** 20, 2 ** 10], GgmlType.F32, 0).pad(32);
    await rejectsWith(await writeBytes(huge.bytes()), 'tensor-out-of-bounds');
  });

  test('alignment must be a uint32 power of two, and offsets must honour it', async () => {
    const withAlign = (type, write) => RawGguf.start({ nKv: 1 }).kv('general.alignment', type, write).bytes();
    await rejectsWith(await writeBytes(withAlign(GgufValueType.UINT32, (w) => w.u32(48))), 'bad-alignment');
    await rejectsWith(await writeBytes(withAlign(GgufValueType.UINT32, (w) => w.u32(0))), 'bad-alignment');
    await rejectsWith(await writeBytes(withAlign(GgufValueType.INT32, (w) => w.i32(32))), 'bad-alignment');
    const misaligned = RawGguf.start({ nTensors: 1 }).tensor('t', [4], GgmlType.F32, 8).pad(32).raw(Buffer.alloc(64));
    await rejectsWith(await writeBytes(misaligned.bytes()), 'bad-alignment');
  });

  test('tensors must be packed in header order, as llama.cpp requires', async () => {
    const gap = RawGguf.start({ nTensors: 2 }).tensor('a', [8], GgmlType.F32, 0).tensor('b', [8], GgmlType.F32, 64).pad(32).raw(Buffer.alloc(128));
    const err = await rejectsWith(await writeBytes(gap.bytes()), 'bad-offset');
    assert.match(err.message, /expects 32/);
  });

  test('empty or duplicate keys are bad-key', async () => {
    await rejectsWith(await writeBytes(RawGguf.start({ nKv: 1 }).kv('', GgufValueType.UINT8, (w) => w.u8(1)).bytes()), 'bad-key');
    const dup = RawGguf.start({ nKv: 2 }).kv('a', GgufValueType.UINT8, (w) => w.u8(1)).kv('a', GgufValueType.UINT8, (w) => w.u8(2));
    await rejectsWith(await writeBytes(dup.bytes()), 'bad-key');
  });

  test('bad tensor descriptions are bad-tensor', async () => {
    const cases = [
      RawGguf.start({ nTensors: 2 }).tensor('a', [8], GgmlType.F32, 0).tensor('a', [8], GgmlType.F32, 32),
      RawGguf.start({ nTensors: 1 }).tensor('n'.repeat(64), [8], GgmlType.F32, 0),
      RawGguf.start({ nTensors: 1 }).tensor('neg', [-8], GgmlType.F32, 0),
      RawGguf.start({ nTensors: 1 }).tensor('rows', [16], GgmlType.Q8_0, 0),
    ];
    for (const c of cases) await rejectsWith(await writeBytes(c.pad(32).raw(Buffer.alloc(128)).bytes()), 'bad-tensor');
  });

  test('random corruption of a header only ever gives GgufFormatError', async () => {
    const full = await readFile(await validFile());
    let seed = 99;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const p = tmp();
    for (let i = 0; i < 400; i++) {
      const b = Buffer.from(full);
      for (let k = 0; k < 1 + rnd() * 3; k++) b[Math.floor(rnd() * 224)] = rnd() < 0.5 ? Math.floor(rnd() * 256) : 0xff;
      await writeFile(p, b);
      await readGgufHeader(p).catch((err) => assert.ok(err instanceof GgufFormatError, String(err)));
    }
  });

  test('maxMetadataBytes bounds the header size', async () => {
    const p = tmp();
    await writeGguf(p, { metadata: [kv.strArray('big', Array.from({ length: 2000 }, (_, i) => `token-${i}`))], tensors: [] });
    await rejectsWith(p, 'metadata-too-large', { maxMetadataBytes: 4096 });
    assert.equal((await readGgufHeader(p, { maxMetadataBytes: 1 << 20 })).metadata.size, 1);
  });

  test('a header larger than one read chunk is parsed across chunk boundaries', async () => {
    const p = tmp();
    const tokens = Array.from({ length: 60000 }, (_, i) => `piece-${i}-${'x'.repeat(i % 17)}`);
    await writeGguf(p, { metadata: [kv.strArray('tokenizer.ggml.tokens', tokens), kv.f32Array('s', tokens.map((_, i) => -i))], tensors: [{ name: 'w', type: GgmlType.F32, shape: [4], data: ramp(4) }] });
    const h = await readGgufHeader(p);
    assert.deepEqual(getArray(h, 'tokenizer.ggml.tokens'), tokens);
    assert.equal(getArray(h, 's')[59999], -59999);
    assert.ok(h.dataOffset > 1 << 20);
  });
});

describe('f16 conversion', () => {
  test('rounds to nearest even, like ggml', () => {
    const cases = [
      [1, 0x3c00], [-2, 0xc000], [0.1, 0x2e66], [65504, 0x7bff], [65519.99, 0x7bff], [65520, 0x7c00], [1e9, 0x7c00],
      [-Infinity, 0xfc00], [NaN, 0x7e00], [0, 0], [-0, 0x8000], [2 ** -24, 0x0001], [2 ** -25, 0], [1.5 * 2 ** -25, 0x0001],
      [2 ** -14, 0x0400], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -10, 0x3c01],
    ];
    for (const [v, bits] of cases) assert.equal(f32ToF16(v), bits, `f32ToF16(${v})`);
  });

  test('every finite half survives a round trip', () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      if ((bits & 0x7c00) === 0x7c00) continue;
      assert.equal(f32ToF16(f16ToF32(bits)), bits);
    }
  });
});

describe('quantizers', () => {
  const enc = (type, x) => {
    const out = new Uint8Array(tensorByteSize(type, [x.length]));
    encodeTensorData(type, x, out);
    return out;
  };
  const hex = (u8) => Buffer.from(u8).toString('hex');

  test('Q8_0 of -16..15 (hand-computed)', () => {
    const x = ramp(32, (j) => j - 16);
    const b = enc(GgmlType.Q8_0, x);
    // d = 16/127 -> f16 0x3008; id = 1/d = 7.9375; q = roundf((j - 16) * 7.9375)
    assert.equal(b[0] | (b[1] << 8), 0x3008);
    const q = [...new Int8Array(b.buffer, 2, 32)];
    assert.deepEqual(q, Array.from({ length: 32 }, (_, j) => {
      const v = (j - 16) * 7.9375;
      return Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
    }));
    assert.equal(q[0], -127);
    assert.equal(q[31], 119);
  });

  test('Q4_0 of -16..15 (hand-computed)', () => {
    const b = enc(GgmlType.Q4_0, ramp(32, (j) => j - 16));
    // max-magnitude value -16 -> d = 2, id = 0.5; q = min(15, trunc((j - 16) / 2 + 8.5))
    assert.equal(b[0] | (b[1] << 8), 0x4000);
    for (let j = 0; j < 16; j++) {
      const lo = Math.min(15, Math.trunc((j - 16) / 2 + 8.5));
      const hi = Math.min(15, Math.trunc((j + 16 - 16) / 2 + 8.5));
      assert.equal(b[2 + j], lo | (hi << 4), `byte ${j}`);
    }
  });

  test('all-zero blocks quantize to zero scales and neutral quants', () => {
    const z = new Float32Array(32);
    assert.ok(enc(GgmlType.Q8_0, z).every((v) => v === 0));
    assert.deepEqual([...enc(GgmlType.Q4_0, z).subarray(2)], Array(16).fill(0x88));
    assert.deepEqual([...decodeTensorData(GgmlType.Q5_1, enc(GgmlType.Q5_1, z), 32)], Array(32).fill(0));
  });

  test('bit-identical to ggml quantize_row_*_ref on a reference input', () => {
    // Produced by compiling ggml-quants.c (quantize_row_*_ref) of the bundled llama.cpp.
    const x = new Float32Array(64);
    for (let i = 0; i < 64; i++) x[i] = Math.sin(i * 1.7 + 0.3) * (i < 32 ? 1.5 : 0.01) + (i % 5 === 0 ? 0.25 : 0);
    const golden = {
      [GgmlType.Q4_0]: '28b234e1cc1e52f28f0ba0e74e27d1db0f5228a888880880888888088188888808808888',
      [GgmlType.Q4_1]: '7532f3bddb1e43e2bd0d71f55f28b1d82f34f1ad9b241ca11010e10e101101e01e110110f00f0110',
      [GgmlType.Q5_0]: '28aecc64663359c2882c95f40e1641ce8d4eb1a60da428a4b3de79ee01f01f1101001f10f100100100001001',
      [GgmlType.Q5_1]: '402ef3bd339b99cca63d87d36a0bf2eabe4172b24e69f25b75201ca1082184101021d20e202202d02d120210f11f0120',
      [GgmlType.Q8_0]: '35223971bea05a5d93d4780d991377cf9661579dc3733485007be0a23d63a9b47f313118fbff057afb0204fd770403fcff7f00fb010578fc0303fc780501fb007ffefc03',
    };
    for (const [type, want] of Object.entries(golden)) assert.equal(hex(enc(Number(type), x)), want, `type ${type}`);
  });

  test('dequantized values stay within the quantization step', () => {
    let seed = 7;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    const x = Float32Array.from({ length: 32 * 256 }, (_, i) => rnd() * (1 + (i >> 5) % 7));
    // Allowed error per block, as a multiple of the block's scale d (plus f16 rounding of d and min).
    const bounds = { [GgmlType.Q8_0]: 0.57, [GgmlType.Q4_0]: 1.02, [GgmlType.Q5_0]: 1.02, [GgmlType.Q4_1]: 0.52, [GgmlType.Q5_1]: 0.53 };
    for (const [t, k] of Object.entries(bounds)) {
      const type = Number(t);
      const y = decodeTensorData(type, enc(type, x), x.length);
      for (let b = 0; b < x.length / 32; b++) {
        const blk = x.subarray(b * 32, b * 32 + 32);
        const amax = Math.max(...blk.map(Math.abs));
        const range = Math.max(...blk) - Math.min(...blk);
        const d = { [GgmlType.Q8_0]: amax / 127, [GgmlType.Q4_0]: amax / 8, [GgmlType.Q5_0]: amax / 16, [GgmlType.Q4_1]: range / 15, [GgmlType.Q5_1]: range / 31 }[type];
        for (let j = 0; j < 32; j++) {
          const err = Math.abs(y[b * 32 + j] - blk[j]);
          assert.ok(err <= k * d + 1e-3 * amax, `type ${type} block ${b}[${j}]: error ${err} > ${k} * ${d}`);
        }
      }
    }
  });
});
