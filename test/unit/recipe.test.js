// Catalog recipes without the network or the addon: the shipped MiniGPT-4 entries name the
// checkpoints MiniGPT-4's README and LAVIS publish (and say which file the user must bring);
// malformed recipes are refused with the field named; the LLM files fetched from a hub listing
// are what the converter reads (safetensors over .bin, nothing else).
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { listModels, planModel } from '../../dist/index.js';
import { llmFilesOf } from '../../dist/models/recipe.js';
import { root } from '../helpers.js';

const LAVIS = 'https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/';

test('the shipped MiniGPT-4 entries are recipes of the published checkpoints', async () => {
  delete process.env.MINIGPT_CATALOG;
  const cacheDir = join(root, 'build', 'no-such-cache');
  const { catalog } = await listModels({ cacheDir });
  const byName = Object.fromEntries(catalog.map((e) => [e.name, e]));
  const expect = {
    'minigpt4-7b': { llm: 'hf:Vision-CAIR/vicuna-7b#main', own: 'prerained_minigpt4_7b.pth', drive: '1RY9jV0dyqLX-o38LrumkKRh6Jtaop58R', qformer: true, template: 'minigpt4-v0' },
    'minigpt4-13b': { llm: 'hf:Vision-CAIR/vicuna#main', own: 'pretrained_minigpt4.pth', drive: '1a4zLvaiDBr-36pasffmgpvH5P7CKmpze', qformer: true, template: 'minigpt4-v0' },
    'minigpt4-llama2-7b': { llm: 'hf:meta-llama/Llama-2-7b-chat-hf#main', own: 'pretrained_minigpt4_llama2_7b.pth', drive: '11nAPjEok8eAGGEG1N2vXo3kBLCg0WgUk', qformer: false, template: 'minigpt4-llama2' },
  };
  for (const [name, x] of Object.entries(expect)) {
    const r = byName[name]?.recipe;
    assert.ok(r, `${name} is a recipe`);
    assert.equal(byName[name].placeholder, undefined);
    assert.equal(r.llm.uri, x.llm);
    assert.equal(r.template, x.template);
    assert.equal(r.type, 'Q4_K_M');
    assert.equal(r.encoderType, 'q8_0');
    const names = r.encoder.map((f) => f.name);
    assert.deepEqual(names, x.qformer ? ['eva_vit_g.pth', 'blip2_pretrained_flant5xxl.pth', x.own] : ['eva_vit_g.pth', x.own]);
    assert.equal(r.encoder[0].uri, `${LAVIS}eva_vit_g.pth`);
    if (x.qformer) assert.equal(r.encoder[1].uri, `${LAVIS}blip2_pretrained_flant5xxl.pth`);
    const own = r.encoder.at(-1);
    assert.equal(own.uri, undefined, `${name}: the projection is bring-your-own`);
    assert.match(own.get, new RegExp(`drive\\.google\\.com/file/d/${x.drive}/`));
    // Nothing pinned that could not be checked.
    for (const f of r.encoder) assert.ok(f.size === undefined && f.sha256 === undefined, `${name}: ${f.name} has no invented size or hash`);
    assert.ok(byName[name].sources.some((s) => s.includes('github.com/Vision-CAIR/MiniGPT-4')));
    // Not built: the name resolves, without a request, to where the build will be.
    const plan = await planModel({ model: name }, { cacheDir });
    assert.equal(plan.catalogName, name);
    assert.equal(plan.model.cached, false);
    assert.equal(plan.model.path, join(cacheDir, 'recipes', name, 'Q4_K_M-q8_0', 'model-Q4_K_M.gguf'));
    assert.equal(plan.projector.path, join(cacheDir, 'recipes', name, 'Q4_K_M-q8_0', 'mmproj-q8_0.gguf'));
  }
  assert.match(byName['minigpt4-llama2-7b'].description, /HF_TOKEN/);
});

test('malformed recipes are refused, naming the field', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-recipe-unit-'));
  try {
    const good = { encoder: [{ uri: 'https://example.com/a.pth' }], llm: { uri: 'hf:o/r' }, template: 'minigpt4-v0', type: 'Q4_K_M', encoderType: 'q8_0' };
    const cases = [
      [{ ...good, encoder: [] }, /encoder must list/],
      [{ ...good, encoder: [{ name: 'x.pth' }] }, /encoder\[0\]: neither uri nor get/],
      [{ ...good, encoder: [{ uri: 'https://example.com/a.pth', sha256: 'abc' }] }, /sha256 is not 64 hex/],
      [{ ...good, llm: { uri: 'hf:o/r/file.bin' } }, /llm must be/],
      [{ ...good, template: 'chatml' }, /template must be one of/],
      [{ ...good, type: undefined }, /needs type/],
    ];
    for (const [recipe, re] of cases) {
      const path = join(dir, 'catalog.json');
      await writeFile(path, JSON.stringify({ models: { m: { description: 'd', license: 'l', sources: [], recipe } } }));
      process.env.MINIGPT_CATALOG = path;
      await assert.rejects(listModels({ cacheDir: dir }), (e) => e.code === 'ERR_INVALID_ARGUMENT' && re.test(e.message), String(re));
    }
  } finally {
    delete process.env.MINIGPT_CATALOG;
    await rm(dir, { recursive: true, force: true });
  }
});

test('the LLM files fetched are what the converter reads: safetensors over .bin, top level only', () => {
  const files = (names) => names.map((path) => ({ path }));
  const both = files(['README.md', 'config.json', 'generation_config.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json',
    'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json',
    'pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin', 'pytorch_model.bin.index.json', 'original/consolidated.00.pth', 'LICENSE.txt']);
  assert.deepEqual(llmFilesOf(both).map((f) => f.path).sort(), ['config.json', 'generation_config.json', 'model-00001-of-00002.safetensors',
    'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'special_tokens_map.json', 'tokenizer.model', 'tokenizer_config.json']);
  const bin = files(['config.json', 'tokenizer.model', 'pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin', 'pytorch_model.bin.index.json']);
  assert.deepEqual(llmFilesOf(bin).map((f) => f.path).sort(), bin.map((f) => f.path).sort());
});
