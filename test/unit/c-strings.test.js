// The header as llama.cpp's loaders see it (issue 15): keys found with strcmp, string values
// and tensor names read through c_str(), so everything after a NUL is invisible to them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { asLlamaCppSeesIt, cutAtNul } from '../../dist/gguf/c-strings.js';
import { GgufValueType } from '../../dist/gguf/types.js';

const str = (key, value) => [key, { key, type: GgufValueType.STRING, value }];
const header = (entries, tensorNames = []) => {
  const tensors = tensorNames.map((name) => ({ name, type: 0, shape: [1], offset: 0n, byteSize: 4 }));
  return { version: 3, metadata: new Map(entries), tensors, tensorsByName: new Map(tensors.map((t) => [t.name, t])), alignment: 32, dataOffset: 0, fileSize: 0 };
};

test('cutAtNul keeps what a C string holds', () => {
  assert.equal(cutAtNul('llama'), 'llama');
  assert.equal(cutAtNul('bert\0junk'), 'bert');
  assert.equal(cutAtNul('\0'), '');
});

test('string values and tensor names are cut at their first NUL', () => {
  const h = asLlamaCppSeesIt(header([str('tokenizer.ggml.model', 'bert\0\0')], ['output.weight\0x']));
  assert.equal(h.metadata.get('tokenizer.ggml.model').value, 'bert');
  assert.ok(h.tensorsByName.has('output.weight'));
  assert.equal(h.tensors[0].name, 'output.weight');
});

test('the first key equal up to a NUL wins, as gguf_find_key finds it', () => {
  const h = asLlamaCppSeesIt(header([str('general.architecture\0a', 'first'), str('general.architecture', 'second')]));
  assert.equal(h.metadata.get('general.architecture').value, 'first');
  assert.equal(h.metadata.size, 1);
});

test('a header without NULs is returned as it is', () => {
  const h = header([str('general.architecture', 'llama')], ['a']);
  assert.equal(asLlamaCppSeesIt(h), h);
});
