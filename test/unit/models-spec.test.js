// Model specs parsed from their text alone (no request), the cache layout, and the files
// `hf:owner/repo:quant` picks, by the rules of llama.cpp's common/download.cpp
// (find_best_model, find_best_sibling) at the pinned commit.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseSpec } from '../../dist/models/spec.js';
import { pickModel, pickProjector } from '../../dist/models/pick.js';
import { modelsDir } from '../../dist/index.js';
import { hfFilePath, urlFilePath } from '../../dist/models/cache.js';

test('hf: URIs name a file (with a revision) or a quant of a repo', () => {
  assert.deepEqual(parseSpec('hf:ggml-org/SmolVLM-500M-Instruct-GGUF/SmolVLM-500M-Instruct-Q8_0.gguf', 'model'), {
    kind: 'hf-file', repo: 'ggml-org/SmolVLM-500M-Instruct-GGUF', file: 'SmolVLM-500M-Instruct-Q8_0.gguf', revision: 'main',
  });
  assert.deepEqual(parseSpec('hf:o/r/dir/x.gguf#v1.0', 'model'), { kind: 'hf-file', repo: 'o/r', file: 'dir/x.gguf', revision: 'v1.0' });
  assert.deepEqual(parseSpec('hf:o/r:q4_k_m', 'model'), { kind: 'hf-quant', repo: 'o/r', quant: 'Q4_K_M', revision: 'main' });
  assert.deepEqual(parseSpec('hf:o/r', 'model'), { kind: 'hf-quant', repo: 'o/r', quant: undefined, revision: 'main' });
  assert.equal(parseSpec('smolvlm-500m', 'model').kind, 'name');
  assert.equal(parseSpec('model.gguf', 'model').kind, 'local');
  assert.equal(parseSpec('./smolvlm', 'model').kind, 'local');
  const url = parseSpec('https://example.com/a/b.gguf#sha256=' + 'A'.repeat(64), 'model');
  assert.equal(url.kind, 'url');
  assert.equal(url.url.href, 'https://example.com/a/b.gguf');
  assert.equal(url.sha256, 'a'.repeat(64));
});

test('malformed URIs and unsafe URLs are ERR_INVALID_ARGUMENT, before any request', () => {
  for (const bad of ['hf:', 'hf:onlyowner', 'hf:o/r/../../etc/passwd', 'hf:o/r/a//b.gguf', 'hf:o/r:Q4 K', 'hf:o/r/x.gguf#..', 'hf:-o/r/x.gguf',
    'http://example.com/x.gguf', 'https://user:pw@example.com/x.gguf', 'https://example.com/x.gguf#md5=1', 'ftp://example.com/x.gguf']) {
    assert.throws(() => parseSpec(bad, 'model'), { code: 'ERR_INVALID_ARGUMENT' }, bad);
  }
  assert.equal(parseSpec('http://127.0.0.1:8080/x.gguf', 'model').kind, 'url');
});

test('cache layout: hf/<owner>/<repo>/<revision>/<path>, url/<sha256 of the URL>/<name>', () => {
  assert.equal(hfFilePath('/c', 'o/r', 'refs/pr/1', 'd/x.gguf'), join('/c', 'hf', 'o', 'r', 'refs%2Fpr%2F1', 'd', 'x.gguf'));
  const p = urlFilePath('/c', new URL('https://e.com/m/model%20v1.gguf?x=1'));
  assert.match(p, /^\/c\/url\/[0-9a-f]{64}\/model_v1\.gguf$/);
  const saved = { ...process.env };
  try {
    process.env.MINIGPT_MODELS_DIR = '/tmp/somewhere';
    assert.equal(modelsDir(), '/tmp/somewhere');
    delete process.env.MINIGPT_MODELS_DIR;
    process.env.XDG_CACHE_HOME = '/xdg';
    if (process.platform === 'linux') assert.equal(modelsDir(), '/xdg/minigpt-node');
  } finally {
    process.env = saved;
  }
});

const files = (...paths) => paths.map((path) => ({ path, size: 1 }));

test('a quant picks the model as llama-server -hf does', () => {
  const repo = files('README.md', 'm-Q8_0.gguf', 'm-Q4_K_M.gguf', 'mmproj-m-f16.gguf', 'm-imatrix.gguf', 'm-F16-00001-of-00002.gguf', 'm-F16-00002-of-00002.gguf');
  assert.equal(pickModel(repo, 'Q4_K_M').path, 'm-Q4_K_M.gguf');
  assert.equal(pickModel(repo, 'Q8_0').path, 'm-Q8_0.gguf');
  assert.equal(pickModel(repo, undefined).path, 'm-Q4_K_M.gguf', 'default Q4_K_M');
  assert.equal(pickModel(files('a-Q8_0.gguf', 'a-Q5_K_M.gguf'), undefined).path, 'a-Q8_0.gguf', 'then Q8_0');
  assert.equal(pickModel(files('mmproj-a.gguf', 'a-Q5_K_M.gguf'), undefined).path, 'a-Q5_K_M.gguf', 'then the first model file');
  assert.equal(pickModel(repo, 'F16').path, 'm-F16-00001-of-00002.gguf', 'the first part of a split');
  assert.equal(pickModel(repo, 'Q2_K'), undefined, 'no fallback for a named quant');
  // "Q4_0" must not match "Q4_0_4_4": llama.cpp wants the tag followed by '.' or '-'.
  assert.equal(pickModel(files('m-Q4_0_4_4.gguf', 'm-Q4_0.gguf'), 'Q4_0').path, 'm-Q4_0.gguf');
});

test('the mmproj: same directory or above, then the closest bit width', () => {
  const repo = files('m-Q4_K_M.gguf', 'mmproj-m-f16.gguf', 'mmproj-m-Q8_0.gguf', 'sub/mmproj-m-Q4_0.gguf', 'sub/m-Q8_0.gguf');
  assert.equal(pickProjector(repo, 'm-Q4_K_M.gguf').path, 'mmproj-m-Q8_0.gguf');
  assert.equal(pickProjector(repo, 'sub/m-Q8_0.gguf').path, 'sub/mmproj-m-Q4_0.gguf', 'deeper shared directory wins');
  assert.equal(pickProjector(files('m-F16.gguf', 'mmproj-m-f16.gguf', 'mmproj-m-Q8_0.gguf'), 'm-F16.gguf').path, 'mmproj-m-f16.gguf');
  assert.equal(pickProjector(files('m-Q4_K_M.gguf'), 'm-Q4_K_M.gguf'), undefined);
});
