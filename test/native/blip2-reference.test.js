// The BLIP-2 projector (native/qformer) and the checkpoint converter (src/convert) against an
// independent PyTorch reference (test/reference/blip2_reference.py, float64) on the same tiny
// random weights: HF-named safetensors and LAVIS/MiniGPT-4-named .pth files, converted to
// f32 and q8_0 GGUF. Also the eval preprocessing: our bicubic resize against Pillow's.
//
// Needs Debian's PyTorch at /usr/bin/python3; skipped without it.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { decodeImage, loadModel } from '../../dist/index.js';
import { readGgufHeader } from '../../dist/gguf/read.js';
import { GgmlType } from '../../dist/gguf/types.js';
import { f16ToF32, kv, writeGguf } from '../../dist/gguf/write.js';
import { writeTinyLlama, CLIP_MEAN, CLIP_STD } from '../../tools/fixtures/models.js';
import { root, testPixels } from '../helpers.js';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const REFERENCE = join(root, 'test', 'reference', 'blip2_reference.py');
const torchCheck = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
const skip = torchCheck.status === 0 ? false : `PyTorch is not importable by ${PYTHON} (install Debian's python3-torch)`;

const F32_MAX_REL = 1e-4;
const Q8_MIN_COSINE = 0.999;

// Tiny configs; keys are the GGUF keys without "blip2." (see the reference's DEFAULTS).
// Widths are multiples of 32 so that q8_0 really quantizes the matrices.
const CONFIGS = {
  qformer: {
    variant: 'qformer',
    'vision.image_size': 42, 'vision.patch_size': 14, // 3x3 patches + class = 10 tokens
    'vision.embedding_length': 64, 'vision.block_count': 2, 'vision.attention.head_count': 4,
    'vision.feed_forward_length': 96,
    'qformer.embedding_length': 32, 'qformer.block_count': 3, 'qformer.attention.head_count': 4,
    'qformer.feed_forward_length': 64, 'qformer.cross_attention_frequency': 2, 'qformer.query_count': 8,
    'projection.output_length': 64,
  },
  patch_group: {
    variant: 'patch_group',
    'vision.image_size': 84, 'vision.patch_size': 14, // 6x6 patches: groups of 4 straddle rows
    'vision.embedding_length': 64, 'vision.block_count': 2, 'vision.attention.head_count': 4,
    'vision.feed_forward_length': 96,
    'projection.output_length': 64,
  },
};

async function python(...args) {
  const { stdout } = await run(PYTHON, [REFERENCE, ...args], { maxBuffer: 1 << 24 });
  return stdout.trim();
}

async function readF32(path) {
  const b = await readFile(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

/** max |a - ref| / max |ref|, and the smallest per-token cosine similarity. */
function compare(actual, reference, dim) {
  assert.equal(actual.length, reference.length, 'output size');
  let scale = 0, err = 0;
  for (let i = 0; i < reference.length; i++) {
    scale = Math.max(scale, Math.abs(reference[i]));
    err = Math.max(err, Math.abs(actual[i] - reference[i]));
  }
  let minCos = 1;
  for (let t = 0; t < reference.length / dim; t++) {
    let ab = 0, aa = 0, bb = 0;
    for (let j = t * dim; j < (t + 1) * dim; j++) {
      ab += actual[j] * reference[j];
      aa += actual[j] * actual[j];
      bb += reference[j] * reference[j];
    }
    minCos = Math.min(minCos, ab / Math.sqrt(aa * bb));
  }
  return { maxRel: err / scale, minCos };
}

// ---------------------------------------------------------------------------------------
// A GGUF written here straight from the HF safetensors, without src/convert: it tells an
// encoder fault from a converter fault.
// ---------------------------------------------------------------------------------------

async function readSafetensors(path) {
  const buf = await readFile(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [b, e] = info.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    let data;
    if (info.dtype === 'F32') data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    else if (info.dtype === 'F16') data = Float32Array.from({ length: bytes.length / 2 }, (_, i) => f16ToF32(bytes.readUInt16LE(2 * i)));
    else throw new Error(`unexpected dtype ${info.dtype} for ${name}`);
    out.set(name, { shape: info.shape, data });
  }
  return out;
}

async function writeDirectGguf(path, cfg, hfDir, { type, lnVisionEps }) {
  const st = await readSafetensors(join(hfDir, 'model.safetensors'));
  const tensors = [];
  const add = (name, hfName, quantizable = false) => {
    const t = st.get(hfName);
    assert.ok(t, `missing ${hfName}`);
    // PyTorch shape reversed is ggml's ne; drop leading 1s (class/position/query tokens).
    let shape = [...t.shape].reverse();
    while (shape.length > 1 && shape[shape.length - 1] === 1) shape = shape.slice(0, -1);
    const q = quantizable && type === 'q8_0' && shape.length === 2 && shape[0] % 32 === 0;
    tensors.push({ name, type: q ? GgmlType.Q8_0 : GgmlType.F32, shape, data: t.data });
  };
  const lin = (name, hf) => { add(`${name}.weight`, `${hf}.weight`, true); add(`${name}.bias`, `${hf}.bias`); };
  const norm = (name, hf) => { add(`${name}.weight`, `${hf}.weight`); add(`${name}.bias`, `${hf}.bias`); };
  const v = 'vision_model';
  add('v.patch_embd.weight', `${v}.embeddings.patch_embedding.weight`);
  add('v.patch_embd.bias', `${v}.embeddings.patch_embedding.bias`);
  add('v.class_embd', `${v}.embeddings.class_embedding`);
  add('v.position_embd', `${v}.embeddings.position_embedding`);
  for (let i = 0; i < cfg['vision.block_count']; i++) {
    const b = `${v}.encoder.layers.${i}`;
    norm(`v.blk.${i}.ln1`, `${b}.layer_norm1`);
    lin(`v.blk.${i}.attn_qkv`, `${b}.self_attn.qkv`);
    lin(`v.blk.${i}.attn_out`, `${b}.self_attn.projection`);
    norm(`v.blk.${i}.ln2`, `${b}.layer_norm2`);
    lin(`v.blk.${i}.ffn_up`, `${b}.mlp.fc1`);
    lin(`v.blk.${i}.ffn_down`, `${b}.mlp.fc2`);
  }
  norm('v.ln_vision', `${v}.post_layernorm`);
  const qformer = cfg.variant === 'qformer';
  if (qformer) {
    add('qf.query_tokens', 'query_tokens');
    norm('qf.ln_emb', 'qformer.layernorm');
    for (let i = 0; i < cfg['qformer.block_count']; i++) {
      const b = `qformer.encoder.layer.${i}`;
      lin(`qf.blk.${i}.self_q`, `${b}.attention.attention.query`);
      lin(`qf.blk.${i}.self_k`, `${b}.attention.attention.key`);
      lin(`qf.blk.${i}.self_v`, `${b}.attention.attention.value`);
      lin(`qf.blk.${i}.self_out`, `${b}.attention.output.dense`);
      norm(`qf.blk.${i}.self_ln`, `${b}.attention.output.LayerNorm`);
      if (i % cfg['qformer.cross_attention_frequency'] === 0) {
        lin(`qf.blk.${i}.cross_q`, `${b}.crossattention.attention.query`);
        lin(`qf.blk.${i}.cross_k`, `${b}.crossattention.attention.key`);
        lin(`qf.blk.${i}.cross_v`, `${b}.crossattention.attention.value`);
        lin(`qf.blk.${i}.cross_out`, `${b}.crossattention.output.dense`);
        norm(`qf.blk.${i}.cross_ln`, `${b}.crossattention.output.LayerNorm`);
      }
      lin(`qf.blk.${i}.ffn_up`, `${b}.intermediate_query.dense`);
      lin(`qf.blk.${i}.ffn_down`, `${b}.output_query.dense`);
      norm(`qf.blk.${i}.ffn_ln`, `${b}.output_query.LayerNorm`);
    }
  }
  add('proj.weight', 'language_projection.weight');
  add('proj.bias', 'language_projection.bias');
  const metadata = [
    kv.str('general.architecture', 'blip2'),
    kv.str('general.name', 'minigpt-node test: written from HF safetensors without the converter'),
    kv.str('blip2.variant', cfg.variant),
    kv.str('blip2.prompt_template', 'none'),
    kv.u32('blip2.vision.image_size', cfg['vision.image_size']),
    kv.u32('blip2.vision.patch_size', cfg['vision.patch_size']),
    kv.u32('blip2.vision.embedding_length', cfg['vision.embedding_length']),
    kv.u32('blip2.vision.block_count', cfg['vision.block_count']),
    kv.u32('blip2.vision.attention.head_count', cfg['vision.attention.head_count']),
    kv.u32('blip2.vision.feed_forward_length', cfg['vision.feed_forward_length']),
    kv.f32('blip2.vision.attention.layer_norm_epsilon', cfg['vision.attention.layer_norm_epsilon']),
    kv.f32('blip2.vision.ln_vision_epsilon', lnVisionEps),
    kv.f32Array('blip2.vision.image_mean', CLIP_MEAN),
    kv.f32Array('blip2.vision.image_std', CLIP_STD),
    kv.u32('blip2.projection.input_group', cfg['projection.input_group']),
    kv.u32('blip2.projection.output_length', cfg['projection.output_length']),
  ];
  if (qformer)
    metadata.push(
      kv.u32('blip2.qformer.embedding_length', cfg['qformer.embedding_length']),
      kv.u32('blip2.qformer.block_count', cfg['qformer.block_count']),
      kv.u32('blip2.qformer.attention.head_count', cfg['qformer.attention.head_count']),
      kv.u32('blip2.qformer.feed_forward_length', cfg['qformer.feed_forward_length']),
      kv.f32('blip2.qformer.layer_norm_epsilon', cfg['qformer.layer_norm_epsilon']),
      kv.u32('blip2.qformer.cross_attention_frequency', cfg['qformer.cross_attention_frequency']),
      kv.u32('blip2.qformer.query_count', cfg['qformer.query_count']),
    );
  await writeGguf(path, { metadata, tensors });
}

// ---------------------------------------------------------------------------------------

let dir, llm;
const figures = [];

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), 'minigpt-blip2-ref-'));
  llm = join(dir, 'tiny-llama.gguf');
  await writeTinyLlama(llm, { nEmbd: 64 });
});

after(async () => {
  if (figures.length) console.log(`# blip2 reference figures:\n${figures.map((f) => `#   ${f}`).join('\n')}`);
  // BLIP2_REF_KEEP=1 keeps the weights, GGUFs and reference outputs for a closer look.
  if (dir && process.env.BLIP2_REF_KEEP) console.log(`# blip2 reference files kept in ${dir}`);
  else if (dir) await rm(dir, { recursive: true, force: true });
});

/** Encodes `pixels` with projector `gguf`; returns [floats, nTokens, nEmbd]. */
async function encode(gguf, pixels) {
  const model = await loadModel({ model: llm, projector: gguf, threads: 2 });
  try {
    const e = await model.encodeImage(pixels);
    try {
      return [e.toFloat32Array(), e.nTokens, e.nEmbd];
    } finally {
      await e.dispose();
    }
  } finally {
    await model.dispose();
  }
}

async function countQ8(gguf) {
  const h = await readGgufHeader(gguf);
  return h.tensors.filter((t) => t.type === GgmlType.Q8_0).length;
}

for (const [name, config] of Object.entries(CONFIGS)) {
  describe(`BLIP-2 ${name} vs the PyTorch reference`, { skip }, () => {
    let work, cfg, pixels, ref, lnVisionEps, tokens, D, convertBlip2;
    const S = config['vision.image_size'];

    before(async () => {
      work = join(dir, name);
      await writeFile(join(dir, `${name}.json`), JSON.stringify(config));
      // qformer: f32 files, eva_vit_g.pth keys under visual_encoder.; patch_group: the ViT
      // stored as f16 (HalfStorage / F16) with bare keys, as in LAVIS's own eva_vit_g.pth.
      const vitOptions = name === 'qformer' ? ['--vit-prefix', 'visual_encoder.'] : ['--vit-prefix', 'none', '--vit-dtype', 'float16'];
      await python('make', '--config', join(dir, `${name}.json`), '--seed', '11', '--out', work, ...vitOptions);
      cfg = JSON.parse(await readFile(join(work, 'config.json'), 'utf8'));
      pixels = testPixels(S, S, 3);
      const rgb = join(work, 'image.rgb');
      await writeFile(rgb, pixels.data);
      ref = {};
      lnVisionEps = {};
      for (const from of ['lavis', 'hf']) {
        const out = join(work, `ref-${from}.f32`);
        const info = JSON.parse(await python('run', '--weights', work, '--image', rgb, '--size', String(S), '--out', out, '--from', from));
        ref[from] = await readF32(out);
        lnVisionEps[from] = info.ln_vision_eps; // 1e-5 for LAVIS, the config's layer_norm_eps for HF
      }
      D = cfg['projection.output_length'];
      tokens = ref.lavis.length / D;
      try {
        ({ convertBlip2 } = await import('../../dist/convert/blip2.js'));
      } catch (err) {
        convertBlip2 = () => { throw new Error(`the converter is not built (dist/convert/blip2.js): ${err.message}`); };
      }
    });

    // "direct": a GGUF written here from the HF file, no converter (an encoder fault shows
    // there too; a converter fault only in the hf / lavis rows).
    for (const from of ['direct', 'hf', 'lavis'])
      for (const type of ['f32', 'q8_0'])
        test(`${from === 'direct' ? 'encoder alone (GGUF written by this test from the HF file)' : `converted from the ${from === 'hf' ? 'HF safetensors' : 'LAVIS .pth'} set`}, ${type}`, async () => {
          const output = join(work, `${from}-${type}.gguf`);
          if (from === 'direct') {
            // HF: post_layernorm (ln_vision) uses the blocks' eps.
            await writeDirectGguf(output, cfg, join(work, 'hf'), { type, lnVisionEps: cfg['vision.attention.layer_norm_epsilon'] });
          } else {
            const inputs = from === 'hf'
              ? [join(work, 'hf')]
              : (name === 'qformer'
                ? ['eva_vit_g.pth', 'blip2_pretrained.pth', 'pretrained_minigpt4.pth']
                : ['eva_vit_g.pth', 'pretrained_minigpt4_llama2.pth']).map((f) => join(work, 'lavis', f));
            // .pth files carry no config: give the head counts, which shapes cannot tell.
            await convertBlip2({ inputs, output, type, ...(from === 'lavis' ? lavisOptions(cfg) : {}) });
          }
          const source = from === 'lavis' ? 'lavis' : 'hf';
          const header = await readGgufHeader(output);
          assert.equal(header.metadata.get('blip2.vision.ln_vision_epsilon')?.value, Math.fround(lnVisionEps[source]), 'ln_vision eps');
          const [out, nTokens, nEmbd] = await encode(output, pixels);
          assert.deepEqual([nTokens, nEmbd], [tokens, D]);
          const { maxRel, minCos } = compare(out, ref[source], D);
          figures.push(`${name} ${from} ${type}: max rel ${maxRel.toExponential(2)}, min cosine ${minCos.toFixed(6)}`);
          if (type === 'f32') assert.ok(maxRel <= F32_MAX_REL, `f32 max relative error ${maxRel} > ${F32_MAX_REL}`);
          else {
            assert.ok((await countQ8(output)) > 0, 'no tensor of the q8_0 file is q8_0');
            assert.ok(minCos >= Q8_MIN_COSINE, `q8_0 min cosine ${minCos} < ${Q8_MIN_COSINE}`);
          }
        });

    // The lower-bit types the spec allows for the big matrices, converted from the HF set.
    // Bounds are loose sanity checks (measured: q5 >= 0.9948, q4 >= 0.967 on these tiny
    // matrices, whose small residual streams make every LayerNorm amplify rounding).
    for (const [type, ggmlType, minCosine] of [['q5_0', GgmlType.Q5_0, 0.99], ['q5_1', GgmlType.Q5_1, 0.99], ['q4_0', GgmlType.Q4_0, 0.95], ['q4_1', GgmlType.Q4_1, 0.95]])
      test(`converted from the HF safetensors set, ${type}`, async () => {
        const output = join(work, `hf-${type}.gguf`);
        await convertBlip2({ inputs: [join(work, 'hf')], output, type });
        const header = await readGgufHeader(output);
        assert.ok(header.tensors.some((t) => t.type === ggmlType), `no tensor of the ${type} file is ${type}`);
        const [out] = await encode(output, pixels);
        const { maxRel, minCos } = compare(out, ref.hf, D);
        figures.push(`${name} hf ${type}: max rel ${maxRel.toExponential(2)}, min cosine ${minCos.toFixed(6)}`);
        assert.ok(minCos >= minCosine, `${type} min cosine ${minCos} < ${minCosine}`);
      });
  });
}

/** Hyperparameters a LAVIS .pth set cannot state (head counts); eps values are LAVIS defaults. */
function lavisOptions(cfg) {
  return {
    visionHeads: cfg['vision.attention.head_count'],
    ...(cfg.variant === 'qformer' ? { qformerHeads: cfg['qformer.attention.head_count'] } : {}),
  };
}

// ---------------------------------------------------------------------------------------

/** A 333x250 photo-like picture: smooth gradients, a hard-edged disc, fine stripes, text-like marks. */
function photoPixels(width = 333, height = 250) {
  const data = new Uint8Array(width * height * 3);
  let seed = 12345;
  const noise = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24) / 255 - 0.5;
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      let r = 40 + 180 * (x / width), g = 60 + 150 * (y / height), b = 120 + 80 * Math.sin((x + y) / 37);
      const dx = x - 210, dy = y - 110;
      if (dx * dx + dy * dy < 60 * 60) { r = 230; g = 200 - dy; b = 40; }          // disc with a hard edge
      if (x > 30 && x < 150 && y > 150 && y < 230 && ((x >> 2) & 1)) { r = g = b = 15; } // 4-pixel stripes
      if (y % 41 === 0 || x % 53 === 0) { r = 250; g = 250; b = 250; }              // thin lines
      data[i] = Math.max(0, Math.min(255, Math.round(r + 12 * noise())));
      data[i + 1] = Math.max(0, Math.min(255, Math.round(g + 12 * noise())));
      data[i + 2] = Math.max(0, Math.min(255, Math.round(b + 12 * noise())));
    }
  return { data, width, height };
}

describe('BLIP-2 eval preprocessing', { skip }, () => {
  test("decodeImage's 224x224 bicubic resize is within 2 levels (mean) of Pillow's BICUBIC", async () => {
    const p = photoPixels();
    const png = join(dir, 'photo.png');
    await sharp(p.data, { raw: { width: p.width, height: p.height, channels: 3 } }).png().toFile(png);
    const pilOut = join(dir, 'photo-pil.rgb');
    await python('resize', '--image', png, '--size', '224', '--out', pilOut);
    const pil = await readFile(pilOut);
    const ours = await decodeImage(await readFile(png), { resize: { width: 224, height: 224 } });
    assert.deepEqual([ours.width, ours.height], [224, 224]);
    assert.equal(ours.data.length, pil.length);
    let sum = 0, max = 0;
    for (let i = 0; i < pil.length; i++) {
      const d = Math.abs(ours.data[i] - pil[i]);
      sum += d;
      max = Math.max(max, d);
    }
    const mean = sum / pil.length;
    figures.push(`resize 333x250 -> 224x224 vs Pillow BICUBIC: mean abs diff ${mean.toFixed(3)} levels, max ${max}`);
    assert.ok(mean <= 2, `mean absolute difference ${mean} levels`);
  });

  test('a picture already image_size square goes through the resize unchanged', async () => {
    const raw = testPixels(84, 84, 5);
    const d = await decodeImage(raw, { resize: { width: 84, height: 84 } });
    assert.deepEqual(Buffer.from(d.data), Buffer.from(raw.data));
  });
});
