// The stop-string detector and option validation, without the native addon.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StopDetector } from '../../dist/stop.js';
import { checkKeys, optInteger } from '../../dist/validate.js';

const run = (stops, texts) => {
  const d = new StopDetector(stops);
  const out = [];
  texts.forEach((text, token) => out.push(...d.push({ text, token })));
  if (!d.stopped) out.push(...d.flush());
  return { text: out.map((p) => p.text).join(''), tokens: out.map((p) => p.token), stopped: d.stopped };
};

test('without stop strings every piece passes straight through', () => {
  const d = new StopDetector([]);
  assert.deepEqual(d.push({ text: 'a', token: 1 }), [{ text: 'a', token: 1 }]);
});

test('a stop string spread over pieces is cut, with nothing after it', () => {
  assert.deepEqual(run(['###'], ['Hello', ' wor', 'ld#', '#', '#Human', 'x']), { text: 'Hello world', tokens: [0, 1, 2], stopped: true });
});

test('text that only looks like the start of a stop string is released at the end', () => {
  assert.deepEqual(run(['###'], ['a#', '#b']), { text: 'a##b', tokens: [0, 1], stopped: false });
});

test('held pieces are released as soon as they cannot begin a stop string', () => {
  const d = new StopDetector(['STOP']);
  assert.deepEqual(d.push({ text: 'xS', token: 0 }), []);
  assert.deepEqual(d.push({ text: 'Tx', token: 1 }), [{ text: 'xS', token: 0 }, { text: 'Tx', token: 1 }]);
});

test('the earliest of several stop strings wins', () => {
  assert.equal(run(['END', 'e'], ['abc', 'deEND']).text, 'abcd');
});

test('unknown option names are rejected, with a camelCase hint', () => {
  assert.throws(() => checkKeys({ max_tokens: 1 }, ['maxTokens'], 'x'), /did you mean "maxTokens"/);
  assert.throws(() => checkKeys({ foo: 1 }, ['maxTokens'], 'x'), { code: 'ERR_INVALID_ARGUMENT' });
  assert.throws(() => optInteger({ n: 150 }, 'n', 1, 100), /Expected integer between 1 and 100 for n but received 150 of type number/);
});
