// Random-weight models of realistic shape for `npm run bench`, written once into
// .cache/bench (git-ignored) and reused: a TinyLlama-1.1B-shaped LLaMA (written in f16 by our
// GGUF writer, then Q4_0 / Q8_0 by llama.cpp's own quantizer from the same source), a CLIP
// ViT-B/16 "mlp" projector at 224 px, the EVA ViT-g/14 + Q-Former BLIP-2 projector, and the
// test pictures. Random weights give random text, which is all a timing needs.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { writeGguf } from '../dist/gguf/write.js';
import { GgmlType } from '../dist/gguf/types.js';
import { writeTinyBlip2 } from '../tools/fixtures/blip2.js';
import { CHATML_TEMPLATE, llamaMetadata, writeTinyMmproj } from '../tools/fixtures/models.js';
import { makeRng, randomAround, randomNormal } from '../tools/fixtures/prng.js';
import { buildSpmVocab, TOKEN_TYPE } from '../tools/fixtures/vocab.js';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const cacheDir = join(root, '.cache', 'bench');
export const oracles = join(root, 'build', 'oracles');

// TinyLlama-1.1B-Chat v1.0's shape (its config.json), with a 32000-token SPM vocabulary.
export const TINYLLAMA = { nEmbd: 2048, nLayer: 22, nHead: 32, nHeadKv: 4, nFf: 5632, nVocab: 32000, nCtx: 2048, ropeFreqBase: 10000, rmsEps: 1e-5 };
// CLIP ViT-B/16 at 224 px (196 image tokens) with LLaVA-1.5's two-layer "mlp" projection into the LLM width.
export const VIT_B16 = { imageSize: 224, patchSize: 16, nEmbd: 768, nLayer: 12, nHead: 12, nFf: 3072, hidden: 2048, nEmbdText: 2048 };
// MiniGPT-4's encoder: EVA ViT-g/14 + Q-Former (32 image tokens), projected into the LLM width.
export const EVA = { imageSize: 224, patchSize: 14, nEmbd: 1408, nLayer: 39, nHead: 16, nFf: 6144, qfHidden: 768, qfLayers: 12, qfHeads: 12, qfFf: 3072, nQuery: 32, crossFreq: 2, nEmbdText: 2048 };

function rngFor(name) {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return makeRng(h >>> 0);
}

// The test vocabulary (whole English words as single tokens, so a prompt of N known words is
// exactly N tokens) padded to the real size with Hangul pieces no prompt here ever contains,
// so they cannot change how the prompt tokenizes.
export function benchVocab(size) {
  const v = buildSpmVocab();
  const tokens = [...v.tokens], scores = [...v.scores], types = [...v.types];
  let score = Math.min(...scores) - 1;
  const push = (piece) => { tokens.push(piece); scores.push(score--); types.push(TOKEN_TYPE.NORMAL); };
  const syllables = 11172;
  for (let i = 0; tokens.length < size && i < syllables; i++) push(String.fromCharCode(0xac00 + i));
  for (let i = 0; tokens.length < size; i++) push(String.fromCharCode(0xac00 + (i % syllables), 0xac00 + Math.floor(i / syllables)));
  return { ...v, tokens, scores, types };
}

/** Writes a LLaMA-architecture GGUF of the given shape with random weights (f16 or f32 matrices). */
export async function writeLlama(path, shape = TINYLLAMA, type = 'f16') {
  const s = shape;
  const vocab = benchVocab(s.nVocab);
  const headDim = s.nEmbd / s.nHead;
  const wtype = type === 'f16' ? GgmlType.F16 : GgmlType.F32;
  const metadata = llamaMetadata({ ...s, type, name: 'minigpt-node bench TinyLlama-1.1B shape (random weights)', vocab, chatTemplate: CHATML_TEMPLATE });
  const E = s.nEmbd, kvWidth = s.nHeadKv * headDim;
  const mat = (name, ne0, ne1, std) => ({ name, type: wtype, shape: [ne0, ne1], data: () => randomNormal(rngFor(name), ne0 * ne1, std) });
  const norm = (name) => ({ name, type: GgmlType.F32, shape: [E], data: () => randomAround(rngFor(name), E, 1, 0.1) });
  // Zero output rows for control and byte tokens: greedy decoding then never picks EOS, so
  // every contender generates exactly the tokens asked for, even those that cannot ignore EOS.
  const output = () => {
    const w = randomNormal(rngFor('output.weight'), E * s.nVocab, 1 / Math.sqrt(E));
    vocab.types.forEach((t, id) => { if (t !== TOKEN_TYPE.NORMAL) w.fill(0, id * E, (id + 1) * E); });
    return w;
  };
  const tensors = [
    mat('token_embd.weight', E, s.nVocab, 1),
    norm('output_norm.weight'),
    { name: 'output.weight', type: wtype, shape: [E, s.nVocab], data: output },
  ];
  for (let il = 0; il < s.nLayer; il++) {
    const b = `blk.${il}`;
    tensors.push(
      norm(`${b}.attn_norm.weight`),
      mat(`${b}.attn_q.weight`, E, E, 1 / Math.sqrt(E)),
      mat(`${b}.attn_k.weight`, E, kvWidth, 1 / Math.sqrt(E)),
      mat(`${b}.attn_v.weight`, E, kvWidth, 1 / Math.sqrt(E)),
      mat(`${b}.attn_output.weight`, E, E, 1 / Math.sqrt(E)),
      norm(`${b}.ffn_norm.weight`),
      mat(`${b}.ffn_gate.weight`, E, s.nFf, 1 / Math.sqrt(E)),
      mat(`${b}.ffn_up.weight`, E, s.nFf, 1 / Math.sqrt(E)),
      mat(`${b}.ffn_down.weight`, s.nFf, E, 1 / Math.sqrt(s.nFf)),
    );
  }
  await writeGguf(path, { metadata, tensors });
}

// Writes under a temporary name and renames at the end, so an interrupted run never leaves a
// truncated model in the cache.
async function ensure(name, write) {
  const path = join(cacheDir, name);
  if (existsSync(path)) return path;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${path}.partial`;
  rmSync(tmp, { force: true });
  process.stderr.write(`bench: writing ${path} ...\n`);
  const t0 = performance.now();
  await write(tmp);
  renameSync(tmp, path);
  process.stderr.write(`bench: wrote ${name} in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  return path;
}

async function quantize(src, dst, type, threads) {
  const tool = join(oracles, 'llama-quantize');
  if (!existsSync(tool)) throw new Error(`${tool} is missing: run npm run build:native first`);
  await promisify(execFile)(tool, [src, dst, type, String(threads)], { maxBuffer: 64 << 20 });
}

// A deterministic picture with edges and gradients (content does not matter to the timing,
// but a flat image would compress to nothing and hide decode cost).
export async function writePicture(path, seed, size = 224) {
  const data = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      data[i] = (x * 3 + seed * 61) & 255;
      data[i + 1] = (y * 5 + ((x >> 4) & 1) * 128 + seed * 17) & 255;
      data[i + 2] = ((x ^ y) * 7 + seed * 29) & 255;
    }
  }
  await sharp(data, { raw: { width: size, height: size, channels: 3 } }).png().toFile(path);
}

/**
 * Makes (or finds) every model and picture the benchmark needs.
 * @param {{ quants: string[], blip2: boolean, threads: number }} want
 */
export async function ensureModels({ quants = ['Q4_0', 'Q8_0'], blip2 = true, threads = 2 } = {}) {
  const out = { llm: {}, pictures: [] };
  const f16 = await ensure('tinyllama-1.1b-f16.gguf', (p) => writeLlama(p, TINYLLAMA, 'f16'));
  out.f16 = f16;
  for (const q of quants) out.llm[q] = await ensure(`tinyllama-1.1b-${q.toLowerCase()}.gguf`, (p) => quantize(f16, p, q, threads));
  out.clip = await ensure('clip-vit-b16-224-mlp-2048-f16.gguf', (p) => writeTinyMmproj(p, { ...VIT_B16, type: 'f16' }));
  if (blip2) out.blip2 = await ensure('eva-vit-g-qformer-2048-f16.gguf', (p) => writeTinyBlip2(p, { ...EVA, type: 'f16' }));
  for (let i = 0; i < 4; i++) out.pictures.push(await ensure(`picture-${i}.png`, (p) => writePicture(p, i)));
  return out;
}
