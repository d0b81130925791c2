// Benchmark: our LLaMA converter (convertLlama) against llama.cpp's convert_hf_to_gguf.py on
// the same Hugging Face folder of random f16 weights, f16 output. Each converter runs in its
// own process under /usr/bin/time -v: wall time and peak RSS. The outputs must be identical.
//
//   node bench/convert-llama.mjs [--shape 7b|1b|tiny] [--dir /tmp/x] [--keep] [--runs 1]
//
// 7b is LLaMA-7B's shape (32 layers, 4096 wide, 11008 ff, 32000 tokens): 13 GB of input and
// 13 GB of output; the files are removed at the end unless --keep.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, open, rm, writeFile, readFile, stat } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { CONVERTER, oracleMissing, trainTokenizer } from '../tools/fixtures/llama-hf.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { shape: { type: 'string', default: '1b' }, dir: { type: 'string', default: '/tmp/minigpt-bench-convert-llama' }, keep: { type: 'boolean' }, runs: { type: 'string', default: '1' } } });
const SHAPES = {
  '7b': { blocks: 32, embd: 4096, ff: 11008, heads: 32, vocab: 32000, shards: 2 },
  '1b': { blocks: 8, embd: 2048, ff: 5504, heads: 16, vocab: 32000, shards: 2 },
  tiny: { blocks: 2, embd: 256, ff: 688, heads: 4, vocab: 32000, shards: 2 },
};
const shape = SHAPES[values.shape];
if (!shape) throw new Error(`--shape must be one of ${Object.keys(SHAPES).join(', ')}`);
const missing = oracleMissing();
if (missing) throw new Error(`cannot run convert_hf_to_gguf.py: ${missing}`);

const dir = values.dir;
const folder = join(dir, `llama-${values.shape}`);
await rm(dir, { recursive: true, force: true });
await mkdir(folder, { recursive: true });

// ---- the checkpoint: sharded safetensors of random f16 (finite values below 2 in magnitude) ----
function tensorList() {
  const { blocks, embd, ff, vocab } = shape;
  const list = [['model.embed_tokens.weight', [vocab, embd]]];
  for (let i = 0; i < blocks; i++) {
    const p = `model.layers.${i}.`;
    list.push([`${p}self_attn.q_proj.weight`, [embd, embd]], [`${p}self_attn.k_proj.weight`, [embd, embd]], [`${p}self_attn.v_proj.weight`, [embd, embd]],
      [`${p}self_attn.o_proj.weight`, [embd, embd]], [`${p}mlp.gate_proj.weight`, [ff, embd]], [`${p}mlp.up_proj.weight`, [ff, embd]],
      [`${p}mlp.down_proj.weight`, [embd, ff]], [`${p}input_layernorm.weight`, [embd]], [`${p}post_attention_layernorm.weight`, [embd]]);
  }
  list.push(['model.norm.weight', [embd]], ['lm_head.weight', [vocab, embd]]);
  return list;
}
const tensors = tensorList();
const bytesOf = (s) => s.reduce((a, b) => a * b, 1) * 2;
const maxBytes = Math.max(...tensors.map(([, s]) => bytesOf(s)));
const noise = new Uint16Array(maxBytes / 2);
for (let off = 0; off < noise.length; off += 1 << 24) randomFillSync(noise.subarray(off, Math.min(noise.length, off + (1 << 24))));
for (let i = 0; i < noise.length; i++) noise[i] &= 0xbfff; // exponent <= 15: finite, |x| < 2
const t0 = Date.now();
const weightMap = {};
const perShard = Math.ceil(tensors.length / shape.shards);
for (let s = 0; s < shape.shards; s++) {
  const name = `model-${String(s + 1).padStart(5, '0')}-of-${String(shape.shards).padStart(5, '0')}.safetensors`;
  const part = tensors.slice(s * perShard, (s + 1) * perShard);
  const header = {};
  let at = 0;
  for (const [n, sh] of part) { header[n] = { dtype: 'F16', shape: sh, data_offsets: [at, at + bytesOf(sh)] }; at += bytesOf(sh); weightMap[n] = name; }
  const json = Buffer.from(JSON.stringify(header));
  const fh = await open(join(folder, name), 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  await fh.write(len);
  await fh.write(json);
  for (const [, sh] of part) await fh.write(new Uint8Array(noise.buffer, 0, bytesOf(sh)));
  await fh.close();
}
await writeFile(join(folder, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
await writeFile(join(folder, 'config.json'), JSON.stringify({
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: shape.embd, intermediate_size: shape.ff,
  num_attention_heads: shape.heads, num_key_value_heads: shape.heads, num_hidden_layers: shape.blocks, vocab_size: shape.vocab,
  max_position_embeddings: 2048, rms_norm_eps: 1e-6, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float16',
}));
const spm = await trainTokenizer(join(dir, 'spm'));
await writeFile(join(folder, 'tokenizer.model'), await readFile(spm));
const inputBytes = tensors.reduce((a, [, s]) => a + bytesOf(s), 0);
console.log(`shape ${values.shape}: ${tensors.length} tensors, ${(inputBytes / 1e9).toFixed(2)} GB of f16 written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

// ---- the runs ----
function timed(cmd, args, env) {
  const r = spawnSync('/usr/bin/time', ['-v', cmd, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} failed:\n${r.stderr.slice(-3000)}`);
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)/.exec(r.stderr)[1].split(':').map(Number).reduce((a, b) => a * 60 + b, 0);
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)[1]) * 1024;
  return { wall, rss };
}
const oursOut = join(dir, 'ours.gguf');
const theirsOut = join(dir, 'theirs.gguf');
const ourScript = `import { convertLlama } from ${JSON.stringify(join(root, 'dist', 'convert', 'llama.js'))};
await convertLlama({ input: ${JSON.stringify(folder)}, output: ${JSON.stringify(oursOut)}, type: 'f16' });`;
const results = [];
for (let run = 0; run < Number(values.runs); run++) {
  await rm(oursOut, { force: true });
  const ours = timed(process.execPath, ['--input-type=module', '-e', ourScript]);
  results.push({ who: 'minigpt-node convertLlama', ...ours });
  console.log(`ours:   ${ours.wall.toFixed(1)} s, peak RSS ${(ours.rss / 2 ** 20).toFixed(0)} MiB`);
  await rm(theirsOut, { force: true });
  const r = timed('/usr/bin/python3', [CONVERTER, folder, '--outfile', theirsOut, '--outtype', 'f16'], pythonEnv());
  results.push({ who: 'convert_hf_to_gguf.py', ...r });
  console.log(`python: ${r.wall.toFixed(1)} s, peak RSS ${(r.rss / 2 ** 20).toFixed(0)} MiB`);
}
const same = spawnSync('cmp', [oursOut, theirsOut]).status === 0;
console.log(`outputs identical: ${same} (${((await stat(oursOut)).size / 1e9).toFixed(2)} GB)`);
const best = (who) => results.filter((r) => r.who === who).reduce((a, b) => (a.wall < b.wall ? a : b));
const o = best('minigpt-node convertLlama');
const p = best('convert_hf_to_gguf.py');
console.log(JSON.stringify({ shape: values.shape, inputGB: inputBytes / 1e9, ours: o, python: p, speedup: p.wall / o.wall, identical: same }));
if (!values.keep) await rm(dir, { recursive: true, force: true });

function pythonEnv() {
  const shim = join(root, 'tools', 'fixtures', 'llama-convert-shim');
  return { PYTHONPATH: [shim, join(root, 'deps', 'llama.cpp', 'gguf-py')].join(':'), PYTHONDONTWRITEBYTECODE: '1' };
}
