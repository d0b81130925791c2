// The shipped catalog (catalog/models.json): it loads through the library, names a default that
// can be downloaded, pins every file to a commit, and carries a licence and the sources it was
// checked against. No network: the hashes themselves are checked at download time.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { listModels, planModel } from '../../dist/index.js';
import { root } from '../helpers.js';

const path = join(root, 'catalog', 'models.json');

test('the shipped catalog loads, and every entry is pinned, licensed and sourced', async () => {
  delete process.env.MINIGPT_CATALOG;
  const raw = JSON.parse(await readFile(path, 'utf8'));
  const { catalog } = await listModels({ cacheDir: join(root, 'build', 'no-such-cache') });
  assert.deepEqual(catalog.map((e) => e.name).sort(), Object.keys(raw.models).sort());
  for (const name of ['smolvlm-500m', 'gemma-3-4b', 'qwen2.5-vl-3b', 'llava-1.5-7b', 'minigpt4-7b', 'minigpt4-13b', 'minigpt4-llama2-7b']) {
    assert.ok(catalog.some((e) => e.name === name), `${name} is in the catalog`);
  }
  const defaults = catalog.filter((e) => e.default);
  assert.deepEqual(defaults.map((e) => e.name), ['smolvlm-500m']);
  for (const entry of catalog) {
    assert.ok(entry.description.length > 20, `${entry.name}: a description`);
    assert.ok(entry.license.length > 2, `${entry.name}: a licence`);
    assert.ok(entry.sources.some((s) => /^https:\/\//.test(s)), `${entry.name}: sources, at least one a public page`);
    if (entry.placeholder || entry.recipe) {
      assert.equal(entry.model, undefined, `${entry.name}: a placeholder or recipe names no GGUF`);
      assert.ok(entry.sources.some((s) => s.includes('github.com/Vision-CAIR/MiniGPT-4')), `${entry.name}: the original checkpoints' source`);
      continue;
    }
    for (const f of [entry.model, entry.projector]) {
      assert.ok(f, `${entry.name}: a model and a projector`);
      assert.match(f.uri, /^hf:[\w.-]+\/[\w.-]+\/[\w.-]+\.gguf#[0-9a-f]{40}$/, `${entry.name}: pinned to a commit`);
      if (f.sha256 !== undefined) assert.match(f.sha256, /^[0-9a-f]{64}$/);
      if (f.size !== undefined) assert.ok(Number.isSafeInteger(f.size) && f.size > 1e6, `${entry.name}: size in bytes`);
    }
    // Resolving a name makes no request and lands in the cache the catalog says.
    const plan = await planModel({ model: entry.name }, { cacheDir: join(root, 'build', 'no-such-cache') });
    assert.equal(plan.catalogName, entry.name);
    assert.equal(plan.model.uri, entry.model.uri);
    assert.equal(plan.projector?.uri, entry.projector.uri);
    assert.equal(plan.model.cached, false);
  }
  const byName = Object.fromEntries(catalog.map((e) => [e.name, e]));
  // The default is what `minigpt describe photo.jpg` downloads unasked-for size-wise: keep it small.
  const smol = byName['smolvlm-500m'];
  assert.ok(smol.model.size + smol.projector.size < 600e6);
  assert.ok(smol.model.sha256 && smol.projector.sha256, 'the default is verified against pinned hashes');
});
