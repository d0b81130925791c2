// Session.chat: a whole conversation given at once (as HTTP chat APIs send it) answers exactly
// as the same turns streamed one by one, and a follow-up evaluates only its new message.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { collect, loadTinyModel, oracleGreedy, oraclesBuilt, releaseTinyModel } from '../helpers.js';

let fx, model;
before(async () => ({ fx, model } = await loadTinyModel()));
after(() => releaseTinyModel({ fx, model }));

const greedy = { temperature: 0, maxTokens: 12 };

test('chat() of [user, assistant, user] equals the second turn of a kept session', async () => {
  const kept = model.createSession({ systemPrompt: 'Be brief.' });
  const first = await kept.ask([fx.images.pngBytes, 'What is here?'], greedy);
  const second = await kept.ask('And the colours?', greedy);

  const stateless = model.createSession();
  // The same embedding in every request: an image given as bytes would be encoded anew each time.
  const image = await model.encodeImage(fx.images.pngBytes);
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: [image, 'What is here?'] },
    { role: 'assistant', content: first },
    { role: 'user', content: 'And the colours?' },
  ];
  const { text } = await collect(stateless.chat(messages, greedy));
  assert.equal(text, second);
  assert.equal(stateless.stats.reusedTokens, 0);
  assert.equal(stateless.stats.promptTokens, kept.stats.promptTokens);

  // The follow-up repeats everything and adds one turn: only the new turn is evaluated.
  const third = await collect(stateless.chat([...messages, { role: 'assistant', content: second }, { role: 'user', content: 'Thanks?' }], greedy));
  assert.ok(third.tokens.length > 0);
  const s = stateless.stats;
  assert.ok(s.reusedTokens >= kept.stats.promptTokens, `reused ${s.reusedTokens}, the earlier prompt had ${kept.stats.promptTokens}`);
  assert.ok(s.evaluatedTokens < 40, `evaluated ${s.evaluatedTokens}`);
  await kept.dispose();
  await stateless.dispose();
  await image.dispose();
});

test('chat() answers like llama.cpp for a single image turn', { skip: !oraclesBuilt && 'oracles not built' }, async () => {
  const session = model.createSession();
  const ours = await collect(session.chat([{ role: 'system', content: 'You are terse.' }, { role: 'user', content: [fx.images.pngBytes, ' Describe.'] }], { temperature: 0, maxTokens: 8 }));
  const theirs = await oracleGreedy({
    model: fx.model, projector: fx.projector, system: 'You are terse.', prompt: '<__media__> Describe.', n: 8,
    image: { file: fx.images.rgbFile, width: 40, height: 30 },
  });
  assert.deepEqual(ours.tokens, theirs);
  await session.dispose();
});

test('chat() replaces the conversation: a different history is not mixed with the old one', async () => {
  const session = model.createSession();
  await session.ask('Alpha?', greedy);
  const a = await collect(session.chat([{ role: 'user', content: 'Beta?' }], greedy));
  const fresh = model.createSession();
  const b = await collect(fresh.stream('Beta?', greedy));
  assert.deepEqual(a.tokens, b.tokens);
  // stream() after chat() continues the chat's conversation.
  const c = await session.ask('Gamma?', greedy);
  const d = await fresh.ask('Gamma?', greedy);
  assert.equal(c, d);
  await session.dispose();
  await fresh.dispose();
});

test('chat() refuses malformed conversations with ERR_INVALID_ARGUMENT and stays usable', async () => {
  const session = model.createSession();
  const bad = [
    [[], /messages/],
    [[{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }], /last message is the assistant/],
    [[{ role: 'tool', content: 'x' }], /messages\[0\]\.role/],
    [[{ role: 'assistant', content: [fx.images.pngBytes] }, { role: 'user', content: 'x' }], /only user messages/],
    [[{ role: 'user', content: 42 }], /messages\[0\]\.content/],
    [[{ role: 'user', content: ['ok', '\uD800'] }], /messages\[0\]\.content\[1\]/],
  ];
  for (const [messages, pattern] of bad) {
    await assert.rejects(collect(session.chat(messages, greedy)), (err) => err.code === 'ERR_INVALID_ARGUMENT' && pattern.test(err.message), JSON.stringify(messages));
  }
  assert.ok((await session.ask('Still there?', greedy)).length > 0);
  await session.dispose();
});
