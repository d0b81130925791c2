// Issue 15, item 1: vocabularies that llama.cpp's llama_vocab::load aborts on
// (GGML_ASSERT(id_to_token.size() == token_to_id.size())) because it reads each token as a
// C string: up to its first NUL, an empty one renamed "[EMPTY_<id>]", compared by bytes.
// Every such file is refused with ERR_MODEL_LOAD and this process lives on; vocabularies
// llama.cpp loads still load and tokenize as llama.cpp does. llama.cpp's own llama-tokenize
// (built from the same source, no checks of ours) is the oracle that each refused file
// really aborts it and each accepted one really loads.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { writeGgufWithTokens } from '../fixtures/hostile.js';
import { writeTinyLlama } from '../../tools/fixtures/models.js';
import { ggufLayout } from '../../tools/fuzz/gguf-layout.js';
import { llamaTokenize, oracles, oraclesBuilt } from '../helpers.js';

let dir, good, tokens;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-vocab-'));
  good = join(dir, 'good.gguf');
  ({ tokens } = await writeTinyLlama(good));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const id = (text) => {
  const i = tokens.indexOf(text);
  assert.ok(i >= 0, `no token ${text}`);
  return i;
};
// A word piece whose text minus its last character is a token too (the vocabulary holds the prefixes of its words).
const withPrefix = () => tokens.findIndex((t, i) => i > 300 && t.length >= 3 && tokens.includes(t.slice(0, -1)));

/** How llama.cpp's own tokenizer tool ends on `file`: { signal } or { ids }. */
function oracle(file) {
  return new Promise((resolve) => {
    execFile(oracles.tokenize, ['-m', file, '-p', 'zzq Hello', '--ids', '--log-disable'], { env: { ...process.env, GGML_NO_BACKTRACE: '1' } }, (err, stdout) => {
      resolve(err ? { signal: err.signal, code: err.code } : { ids: stdout.trim().split('\n').pop() });
    });
  });
}

let n = 0;
async function variant(renames, types) {
  const file = join(dir, `v${n++}.gguf`);
  await writeGgufWithTokens(good, file, renames, types);
  return file;
}

// Functions, as the ids are known only once the fixture is written.
const refused = () => [
  ['a byte token renamed to the BOS text, NUL-padded to its length (the issue)', { [id('<0x01>')]: '<s>\0\0\0' }],
  ['a byte token renamed to the EOS text and one NUL', { [id('<0x02>')]: '</s>\0' }],
  ['a byte token renamed to a chat marker, NULs and junk after', { [id('<0x03>')]: '<|im_end|>\0\0x\u00ff' }],
  ['a chat marker renamed to the other one, NUL-padded', { [id('<|im_end|>')]: '<|im_start|>\0' }],
  ['two new tokens equal up to their NUL', { [id('<0x04>')]: 'zq\0a', [id('<0x05>')]: 'zq\0bb' }],
  ['a NUL inside a word piece, leaving a prefix that is a token', { [withPrefix()]: `${tokens[withPrefix()].slice(0, -1)}\0${tokens[withPrefix()].slice(-1)}` }],
  ['a token of NULs beside one named as llama.cpp names an empty token', { [id('<0x06>')]: '\0\0', [id('<0x07>')]: `[EMPTY_${id('<0x06>')}]` }],
  ['an empty token beside one named as llama.cpp names it', { [id('<0x08>')]: '', [id('<0x09>')]: `[EMPTY_${id('<0x08>')}]` }],
  ['two tokens of the same invalid UTF-8', { [id('<0x0A>')]: Buffer.from([0xff, 0xfe]), [id('<0x0B>')]: Buffer.from([0xff, 0xfe]) }],
  ['the same invalid UTF-8, one of them followed by a NUL', { [id('<0x0C>')]: Buffer.from([0xc3, 0x28]), [id('<0x0D>')]: Buffer.from([0xc3, 0x28, 0, 0x41]) }],
  ['a plain duplicate', { [id('<0x0E>')]: '\u2581cat', [id('<0x0F>')]: '\u2581cat' }],
];

test('vocabularies with tokens llama.cpp reads as equal are refused, by family', async () => {
  for (const [name, renames] of refused()) {
    const file = await variant(renames);
    if (oraclesBuilt) assert.equal((await oracle(file)).signal, 'SIGABRT', `${name}: llama.cpp itself should abort on this file`);
    await assert.rejects(loadModel({ model: file, threads: 1 }), (err) => {
      assert.equal(err.code, 'ERR_MODEL_LOAD', `${name}: ${err.message}`);
      assert.match(err.message, /tokenizer\.ggml\.tokens: tokens \d+ and \d+ are both .* to llama\.cpp.*every token must be distinct/, name);
      return true;
    }, name);
  }
});

test('the messages say which tokens collide and why', async () => {
  const file = await variant({ [id('<0x01>')]: '<s>\0\0\0' });
  await assert.rejects(loadModel({ model: file, threads: 1 }), {
    code: 'ERR_MODEL_LOAD',
    message: new RegExp(`tokens ${id('<s>')} and ${id('<0x01>')} are both "<s>" to llama\\.cpp \\(llama\\.cpp reads a token only up to its first NUL byte, as token ${id('<0x01>')} has\\)`),
  });
});

test('vocabularies llama.cpp loads still load, and tokenize as llama.cpp does', async () => {
  const accepted = [
    ['a token with a NUL that collides with nothing', { [id('<0x01>')]: 'zzq\0junk' }],
    ['two empty tokens (llama.cpp names each after its id)', { [id('<0x02>')]: '', [id('<0x03>')]: '\0' }],
    ['two different invalid UTF-8 tokens that read alike as text', { [id('<0x04>')]: Buffer.from([0xff]), [id('<0x05>')]: Buffer.from([0xfe]) }],
    ['a NUL after a token that differs from every other only after it', { [id('<0x06>')]: 'zzr\0<s>' }],
  ];
  for (const [name, renames] of accepted) {
    // As NORMAL tokens: llama.cpp refuses (by exception) byte tokens too short to name a byte.
    const file = await variant(renames, Object.fromEntries(Object.keys(renames).map((k) => [k, 1])));
    const model = await loadModel({ model: file, threads: 1 });
    try {
      if (oraclesBuilt) {
        assert.ok((await oracle(file)).ids, `${name}: llama.cpp should load this file`);
        const ours = [...(await model.tokenize('zzq Hello'))];
        assert.deepEqual(ours, await llamaTokenize(file, 'zzq Hello'), name);
      }
    } finally {
      await model.dispose();
    }
  }
});

test('a tokenizer model name cut short by a NUL is read as llama.cpp reads it', async () => {
  // "bert\0" is "bert" (WordPiece) to llama.cpp, which aborts on the vocabulary's byte tokens.
  const bytes = await readFile(good);
  const f = ggufLayout(bytes).fields.find((g) => g.kind === 'string-length' && g.key === 'tokenizer.ggml.model');
  assert.equal(bytes.toString('utf8', f.at + 8, f.at + 8 + Number(f.value)), 'llama');
  Buffer.from('bert\0').copy(bytes, f.at + 8);
  const file = join(dir, 'bert-nul.gguf');
  await writeFile(file, bytes);
  if (oraclesBuilt) assert.equal((await oracle(file)).signal, 'SIGABRT');
  await assert.rejects(loadModel({ model: file, threads: 1 }), { code: 'ERR_MODEL_LOAD', message: /"bert" \(WordPiece\) but the vocabulary has byte tokens/ });
});

test('a vocabulary that asks for a BOS or EOS it does not have is refused at load, not at the first prompt', async () => {
  // llama_tokenize asserts on these when it adds the token, i.e. on the first prompt.
  const { kv } = await import('../../dist/gguf/write.js');
  const cases = [
    // UGM's default BOS is none; an out-of-range id keeps the default.
    ['no-bos', { 'tokenizer.ggml.model': kv.str('', 't5'), 'tokenizer.ggml.bos_token_id': kv.u32('', 100000), 'tokenizer.ggml.add_bos_token': kv.bool('', true) }, /BOS/],
    ['no-eos', { 'tokenizer.ggml.model': kv.str('', 't5'), 'tokenizer.ggml.eos_token_id': kv.u32('', 100000), 'tokenizer.ggml.add_bos_token': kv.bool('', false), 'tokenizer.ggml.add_eos_token': kv.bool('', true) }, null],
  ];
  for (const [name, overrides, pattern] of cases) {
    const file = join(dir, `${name}.gguf`);
    await writeTinyLlama(file, { overrides });
    const crash = await oracle(file);
    if (pattern === null) {
      // t5's default EOS id (1) is in range: it loads, and llama_tokenize adds that EOS.
      assert.ok(crash.ids, `${name}: llama-tokenize ${JSON.stringify(crash)}`);
      const model = await loadModel({ model: file, threads: 1 });
      const plain = Array.from(await model.tokenize('zzq Hello'));
      assert.deepEqual(plain, await llamaTokenize(file, 'zzq Hello', { bos: false }));
      assert.deepEqual(Array.from(await model.tokenize('zzq Hello', { addBos: true })), [...plain, 1]);
      await model.dispose();
      continue;
    }
    assert.equal(crash.signal, 'SIGABRT', `${name}: llama-tokenize should abort on it, got ${JSON.stringify(crash)}`);
    await assert.rejects(loadModel({ model: file, threads: 1 }), (err) => {
      assert.equal(err.code, 'ERR_MODEL_LOAD');
      assert.match(err.message, pattern);
      return true;
    });
  }
});
