// MiniGPT-4's conversation formats, rendered exactly as the original builds them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { builtinStops, renderBuiltin } from '../../dist/prompts.js';

const user = (...parts) => ({ role: 'user', parts: parts.map((p) => (p === IMG ? { text: '<IMG>', image: true } : { text: p, image: false })) });
const assistant = (text) => ({ role: 'assistant', parts: [{ text, image: false }] });
const IMG = Symbol('image');
const SYSTEM = 'Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. Please answer my questions.';

test('MiniGPT-4 v0: first turn, image then question', () => {
  assert.equal(
    renderBuiltin('minigpt4-v0', [user(IMG, 'What is this?')]),
    `${SYSTEM}###Human: <Img><IMG></Img> What is this?###Assistant: `,
  );
});

test('MiniGPT-4 v0: later turns append the answer and the next question', () => {
  assert.equal(
    renderBuiltin('minigpt4-v0', [user(IMG, 'What is this?'), assistant('A cat.'), user('What colour?')]),
    `${SYSTEM}###Human: <Img><IMG></Img> What is this?###Assistant: A cat.###Human: What colour?###Assistant: `,
  );
  assert.deepEqual(builtinStops('minigpt4-v0'), ['###']);
});

test('MiniGPT-4 Llama-2: [INST] turns, BOS written out after the first', () => {
  assert.equal(renderBuiltin('minigpt4-llama2', [user(IMG, 'Describe it.')]), '[INST] <Img><IMG></Img> Describe it. [/INST] ');
  assert.equal(
    renderBuiltin('minigpt4-llama2', [user(IMG, 'Describe it.'), assistant('A dog.'), user('Why?')]),
    '[INST] <Img><IMG></Img> Describe it. [/INST] A dog.<s>[INST] Why? [/INST] ',
  );
});
