// Old GGML LLaMA files (ggjt v1-v3, ggmf, ggml: minigpt4.cpp's Vicuna files) re-wrapped as
// GGUF, against llama.cpp's own convert_llama_ggml_to_gguf.py on the same tiny files: the
// same key-value pairs (names, types, values, order, read back by gguf-py), the same tensor
// names, types and offsets, and the same data section (sha256). One known difference: at
// this llama.cpp commit the script passes element shapes where gguf-py expects byte shapes
// for raw data, so its files record ne0 divided by the element size (a GGUF llama.cpp
// refuses), and it crashes on quantized files ("bytes per row is not a multiple of Q4_0
// type size"); we write the real shapes, and convert quantized files too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertGgml } from '../../dist/convert/ggml.js';
import { ggmlOracle, ggmlOracleMissing, ggufDump, writeGgml } from '../fixtures/ggjt.js';

const NO_ORACLE = ggmlOracleMissing();
let dir;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'minigpt-convert-ggml-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

const ELEMENT_BYTES = { F32: 4, F16: 2 };

for (const [format, version, ftype] of [['ggjt', 3, 1], ['ggjt', 3, 0], ['ggjt', 1, 1], ['ggmf', 1, 1], ['ggml', 1, 0]]) {
  test(`${format} v${version}, ftype ${ftype}: equals convert_llama_ggml_to_gguf.py (but for its shape bug)`, { skip: NO_ORACLE }, async () => {
    const input = join(dir, `ggml-vicuna-7b-${format}${version}-${ftype}.bin`);
    await writeGgml(input, { format, version, ftype, seed: version + ftype });
    const theirs = `${input}.theirs.gguf`;
    const ours = `${input}.ours.gguf`;
    const r = ggmlOracle(input, theirs, ['--eps', '1e-6', '--context-length', '2048']);
    assert.ok(r.ok, r.log.slice(-2000));
    await convertGgml({ input, output: ours, eps: 1e-6, contextLength: 2048 });
    const a = ggufDump(ours);
    const b = ggufDump(theirs);
    assert.deepEqual(a.kv, b.kv);
    assert.equal(a.dataOffset, b.dataOffset);
    assert.equal(a.data, b.data, 'data sections differ');
    assert.equal(a.tensors.length, b.tensors.length);
    for (const [i, [name, type, shape, offset]] of a.tensors.entries()) {
      const [n2, t2, s2, o2] = b.tensors[i];
      assert.deepEqual([name, type, offset], [n2, t2, o2]);
      assert.deepEqual(shape, [s2[0] * ELEMENT_BYTES[type], ...s2.slice(1)], `${name}: ours ${shape}, theirs ${s2}`);
    }
  });
}

test('quantized (Q4_0) ggjt v3: converted with its bytes unchanged (the script crashes on it)', async () => {
  const input = join(dir, 'q4.bin');
  await writeGgml(input, { ftype: 2 });
  const progress = [];
  const res = await convertGgml({ input, output: `${input}.gguf`, onProgress: (d, t) => progress.push(d / t) });
  assert.deepEqual([res.format, res.fileType, res.tensors], ['GGJTv3', 'MOSTLY_Q4_0', 21]);
  assert.equal(progress.at(-1), 1);
  if (!NO_ORACLE) {
    const d = ggufDump(`${input}.gguf`);
    assert.deepEqual(d.tensors[0].slice(0, 3), ['token_embd.weight', 'Q4_0', [64, 320]]);
    assert.deepEqual(d.kv.find(([k]) => k === 'general.description')[2], 'converted from legacy GGJTv3 MOSTLY_Q4_0 format');
  }
});

test('refusals: not GGML, already GGUF, truncated, GGJTv2 Q4_0, bad options; nothing left behind', async () => {
  const code = async (p, c, re) => assert.rejects(p, (e) => e.code === c && (!re || re.test(e.message)));
  const text = join(dir, 'text.bin');
  await writeFile(text, 'not a model at all');
  await code(convertGgml({ input: text, output: join(dir, 'o1.gguf') }), 'ERR_MODEL_LOAD', /unexpected magic/);
  const gguf = join(dir, 'g.bin');
  await writeFile(gguf, Buffer.from('GGUF\x03\0\0\0'));
  await code(convertGgml({ input: gguf, output: join(dir, 'o2.gguf') }), 'ERR_MODEL_LOAD', /already in GGUF/);
  const v2 = join(dir, 'v2.bin');
  await writeGgml(v2, { version: 2, ftype: 2 });
  await code(convertGgml({ input: v2, output: join(dir, 'o3.gguf') }), 'ERR_MODEL_LOAD', /GGJTv3/);
  const cut = join(dir, 'cut.bin');
  await writeGgml(cut, {});
  const { truncate } = await import('node:fs/promises');
  await truncate(cut, 20000);
  await code(convertGgml({ input: cut, output: join(dir, 'o4.gguf') }), 'ERR_MODEL_LOAD', /truncated/);
  await code(convertGgml({ input: cut, output: join(dir, 'o5.gguf'), eps: -1 }), 'ERR_INVALID_ARGUMENT', /eps/);
  await code(convertGgml({ input: cut, output: cut }), 'ERR_INVALID_ARGUMENT', /is the input/);
  assert.deepEqual((await readdir(dir)).filter((f) => /^o\d/.test(f)), []);
});
