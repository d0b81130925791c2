// examples/electron's model host, driven under plain Node exactly as the utility process runs it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as minigpt from '../../dist/index.js';
import { createModelHost } from '../../examples/electron/model-host-core.mjs';
import { makeFixtures } from '../helpers.js';

let fx;
before(async () => {
  fx = await makeFixtures();
});
after(async () => {
  await fx?.cleanup();
});

function host() {
  const inbox = [];
  const waiters = [];
  const send = (m) => {
    inbox.push(m);
    for (const w of waiters.splice(0)) w();
  };
  const until = async (type) => {
    for (;;) {
      const hit = inbox.find((m) => m.type === type || m.type === 'error');
      if (hit) return hit;
      await new Promise((r) => waiters.push(r));
    }
  };
  return { h: createModelHost(send, minigpt), inbox, until };
}

test('load, ask about a picture, stream the answer, quit', async () => {
  const { h, inbox, until } = host();
  await h.handle({ type: 'load', model: fx.model, projector: fx.projector });
  assert.equal((await until('loaded')).info.hasVision, true);
  assert.ok(inbox.some((m) => m.type === 'progress'));
  await h.handle({ type: 'ask', prompt: 'What is in this picture?', image: Array.from(fx.images.pngBytes), maxTokens: 10, temperature: 0 });
  assert.equal((await until('done')).type, 'done');
  const text = inbox.filter((m) => m.type === 'piece').map((m) => m.text).join('');
  const model = await minigpt.loadModel({ model: fx.model, projector: fx.projector });
  const expected = await model.createSession().ask([await model.encodeImage(fx.images.pngBytes), 'What is in this picture?'], { maxTokens: 10, temperature: 0 });
  await model.dispose();
  assert.equal(text, expected);
  await h.handle({ type: 'quit' });
  assert.ok(inbox.some((m) => m.type === 'closed'));
});

test('errors come back as messages, not crashes', async () => {
  const { h, until } = host();
  await h.handle({ type: 'ask', prompt: 'x' });
  assert.equal((await until('done')).code, 'ERR_INVALID_ARGUMENT');
  const { h: h2, until: until2 } = host();
  await h2.handle({ type: 'load', model: '/nonexistent.gguf' });
  assert.equal((await until2('loaded')).code, 'ERR_MODEL_LOAD');
});
