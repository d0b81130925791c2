// The well-formed files the fuzzer mutates, written from seeds at run time: the tiny LLM
// (f32 and f16), the tiny LLaVA mmproj, the tiny BLIP-2 projectors (Q-Former and patch-group
// variants) and small pictures in the formats users send most.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeTinyBlip2 } from '../fixtures/blip2.js';
import { writeTinyLlama, writeTinyMmproj } from '../fixtures/models.js';
import { testPixels } from '../fixtures/pixels.js';

/** What each fuzz kind mutates, and whether its bases are GGUF (so field edits apply). */
export const KINDS = {
  llm: { bases: ['llm', 'llm-f16'], gguf: true },
  mmproj: { bases: ['mmproj', 'mmproj-f16'], gguf: true },
  blip2: { bases: ['blip2', 'blip2-llama2'], gguf: true },
  image: { bases: ['png', 'jpeg', 'webp', 'gif', 'png-alpha'], gguf: false },
};

/** Writes the corpus into `dir`; returns `{ dir, paths, bases, kinds }` (bases as Buffers). */
export async function writeCorpus(dir) {
  await mkdir(dir, { recursive: true });
  const paths = {};
  const at = (name, ext) => (paths[name] = join(dir, `${name}.${ext}`));
  await writeTinyLlama(at('llm', 'gguf'));
  await writeTinyLlama(at('llm-f16', 'gguf'), { type: 'f16', nLayer: 1 });
  await writeTinyMmproj(at('mmproj', 'gguf'), { nEmbdText: 64 });
  await writeTinyMmproj(at('mmproj-f16', 'gguf'), { nEmbdText: 64, type: 'f16', nLayer: 1, classEmbd: false });
  await writeTinyBlip2(at('blip2', 'gguf'), { nEmbdText: 64 });
  await writeTinyBlip2(at('blip2-llama2', 'gguf'), { nEmbdText: 64, variant: 'patch_group', type: 'f16' });

  const px = testPixels(24, 18);
  const picture = () => sharp(px.data, { raw: { width: px.width, height: px.height, channels: 3 } });
  await picture().png().toFile(at('png', 'png'));
  await picture().jpeg({ quality: 80 }).toFile(at('jpeg', 'jpg'));
  await picture().webp({ quality: 70 }).toFile(at('webp', 'webp'));
  const frames = Buffer.concat([px.data, Buffer.from(px.data).reverse()]);
  await sharp(frames, { raw: { width: px.width, height: px.height * 2, channels: 3, pageHeight: px.height } })
    .gif({ loop: 0 })
    .toFile(at('gif', 'gif'));
  await writeFile(at('png-alpha', 'png'), await picture().ensureAlpha(0.5).png().toBuffer());

  const bases = {};
  for (const [name, path] of Object.entries(paths)) bases[name] = await readFile(path);
  return { dir, paths, bases, kinds: KINDS };
}
