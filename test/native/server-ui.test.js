// The page at GET / (assets/chat.html), driven in Debian's chromium through puppeteer-core.
// Against the real server: upload the test image, ask, watch the answer stream, continue the
// conversation; every answer must equal what the API gives for the same request, and each
// request must carry the whole history. Against a scripted server: the error paths (HTTP
// error, error event mid-stream), Stop, New chat and a text-only model.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { createServer } from '../../dist/server/index.js';
import { makeFixtures, root } from '../helpers.js';

const chromiumPath = '/usr/bin/chromium';
const skip = existsSync(chromiumPath) ? false : `Debian's chromium is not at ${chromiumPath} (apt-get install chromium); the page is tested in a real browser only`;
const CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'";
const WAIT = 20_000;
const pageHtml = await readFile(`${root}/assets/chat.html`, 'utf8');

let browser;
async function launch() {
  const { default: puppeteer } = await import('puppeteer-core');
  browser = await puppeteer.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
}

/** A fresh tab on `url`, recording the chat requests' JSON bodies and any script error or CSP violation. */
async function open(url) {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  const bodies = [];
  const problems = [];
  page.on('request', (req) => {
    if (req.url().endsWith('/v1/chat/completions') && req.method() === 'POST') bodies.push({ json: JSON.parse(req.postData()), headers: req.headers() });
  });
  page.on('pageerror', (err) => problems.push(String(err)));
  page.on('console', (msg) => {
    // A failed fetch (401, 400) is logged by chromium as a resource error: expected in the error tests.
    if (msg.type() === 'error' && !/Failed to load resource/.test(msg.text())) problems.push(msg.text());
  });
  await page.goto(url, { waitUntil: 'load' });
  return { page, bodies, problems };
}

/** Types a question and presses Enter. */
async function ask(page, text) {
  await page.click('#q');
  await page.type('#q', text);
  await page.keyboard.press('Enter');
}

/** Waits for the n-th answer (1-based) to leave the streaming state; its state, text and the text seen on the way. */
async function answer(page, n) {
  await page.waitForFunction((i) => {
    const a = document.querySelectorAll('#log .assistant')[i - 1];
    return a && a.dataset.state !== 'streaming';
  }, {}, n);
  return page.evaluate((i) => {
    const a = document.querySelectorAll('#log .assistant')[i - 1];
    return { state: a.dataset.state, text: a.querySelector('.text').textContent, note: a.querySelector('.note')?.textContent ?? '', seen: window.__seen ?? [] };
  }, n);
}

/** Records every text the answers show as it changes, to see the answer grow (streamed, not set once). */
function watchAnswers(page) {
  return page.evaluate(() => {
    window.__seen = [];
    new MutationObserver(() => {
      const all = document.querySelectorAll('#log .assistant .text');
      const last = all[all.length - 1];
      if (last?.textContent && window.__seen[window.__seen.length - 1] !== last.textContent) window.__seen.push(last.textContent);
    }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
  });
}

describe('the page at / against the real server', { skip, timeout: 180_000 }, () => {
  let fx, model, server, keyed, base, keyedBase;

  before(async () => {
    fx = await makeFixtures();
    model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
    server = createServer(model, { parallel: 1 });
    base = `http://127.0.0.1:${(await server.listen(0, '127.0.0.1')).port}`;
    keyed = createServer(model, { parallel: 1, apiKey: 'sesame' });
    keyedBase = `http://127.0.0.1:${(await keyed.listen(0, '127.0.0.1')).port}`;
    await launch();
  });
  after(async () => {
    await browser?.close();
    await server?.close({ timeoutMs: 2000 });
    await keyed?.close({ timeoutMs: 2000 });
    await model?.dispose();
    await fx?.cleanup();
  });

  /** The answer the API gives, not streamed, to the body the page sent. */
  async function apiAnswer(json, headers = {}) {
    const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ ...json, stream: false }) });
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()).choices[0].message.content;
  }

  test('upload an image, ask, see the answer stream, ask again with the whole conversation', async () => {
    const { page, bodies, problems } = await open(`${base}/?temperature=0&max_tokens=24`);
    await page.waitForFunction(() => /tiny-llama/.test(document.getElementById('model').textContent));
    assert.equal(await page.$eval('#pick', (el) => el.hidden), false, 'a vision model shows the image picker');
    assert.equal(await page.$eval('#keybox', (el) => el.hidden), true, 'no key field on a server without a key');

    const input = await page.$('input[type=file]');
    await input.uploadFile(fx.images.png);
    await page.waitForFunction(() => {
      const img = document.getElementById('preview');
      return !img.hidden && img.complete && img.naturalWidth === 40;
    });
    await watchAnswers(page);
    await ask(page, 'What is in the picture?');
    const first = await answer(page, 1);
    assert.equal(first.state, 'done', first.note);
    assert.ok(first.text.length > 0, 'the answer has text');
    // The tiny model may write every token within one network read, so growth token by token is
    // checked against the scripted server below (Stop); here, each text shown is a prefix.
    assert.ok(first.seen.length >= 1);
    for (const partial of first.seen) assert.ok(first.text.startsWith(partial), `each text shown is a prefix of the answer: ${JSON.stringify(partial)}`);

    assert.equal(bodies.length, 1);
    const sent = bodies[0].json;
    assert.equal(sent.stream, true);
    assert.equal(sent.temperature, 0);
    assert.equal(sent.max_tokens, 24);
    assert.equal(sent.messages.length, 1);
    const [imagePart, textPart] = sent.messages[0].content;
    assert.deepEqual(imagePart, { type: 'image_url', image_url: { url: `data:image/png;base64,${fx.images.pngBytes.toString('base64')}` } });
    assert.deepEqual(textPart, { type: 'text', text: 'What is in the picture?' });
    assert.equal(first.text, await apiAnswer(sent), 'the page shows what the API answers to the same request');
    // The image shown with the question in the log, and the picker emptied for the next one.
    assert.equal(await page.$$eval('#log .user img', (imgs) => imgs.length), 1);
    assert.equal(await page.$eval('#preview', (el) => el.hidden), true);

    await ask(page, 'And what colour is it?');
    const second = await answer(page, 2);
    assert.equal(second.state, 'done', second.note);
    assert.equal(bodies.length, 2);
    const history = bodies[1].json.messages;
    assert.equal(history.length, 3, 'the follow-up carries the whole conversation');
    assert.deepEqual(history[0], sent.messages[0], 'the first question again, with its image');
    assert.deepEqual(history[1], { role: 'assistant', content: first.text });
    assert.deepEqual(history[2], { role: 'user', content: 'And what colour is it?' });
    assert.equal(second.text, await apiAnswer(bodies[1].json));
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('a server with an API key: the page asks for it, keeps it for the tab and sends it', async () => {
    const { page, bodies, problems } = await open(`${keyedBase}/?max_tokens=4`);
    await page.waitForFunction(() => !document.getElementById('keybox').hidden);
    assert.match(await page.$eval('#error', (el) => el.textContent), /API key.*HTTP 401/s);
    await page.type('#key', 'sesame');
    await page.keyboard.press('Tab'); // the change event
    await page.waitForFunction(() => /tiny-llama/.test(document.getElementById('model').textContent));
    assert.equal(await page.$eval('#error', (el) => el.textContent), '');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('minigpt-key')), 'sesame');
    await ask(page, 'Hello?');
    const reply = await answer(page, 1);
    assert.equal(reply.state, 'done', reply.note);
    assert.equal(bodies[0].headers.authorization, 'Bearer sesame');

    // A wrong key: the server's 401 message shown readably, the question back in the box.
    await page.$eval('#key', (el) => (el.value = 'wrong'));
    await ask(page, 'Again?');
    const refused = await answer(page, 2);
    assert.equal(refused.state, 'error');
    assert.match(await page.$eval('#error', (el) => el.textContent), /^HTTP 401 Unauthorized: Incorrect API key provided/);
    assert.equal(await page.$eval('#q', (el) => el.value), 'Again?');
    assert.deepEqual(problems, []);
    await page.close();
  });
});

describe('the page against a scripted server', { skip, timeout: 120_000 }, () => {
  let fake, base, script, closed, page0;

  before(async () => {
    fake = createHttpServer((req, res) => {
      if (req.url.split('?')[0] === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': CSP });
        return res.end(pageHtml);
      }
      if (req.url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ object: 'list', data: [{ id: 'scripted', object: 'model', meta: { vision: script.vision } }] }));
      }
      if (req.url !== '/v1/chat/completions' || req.method !== 'POST') {
        res.writeHead(404);
        return res.end();
      }
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => script.chat(req, res, JSON.parse(body)));
    });
    await new Promise((resolve) => fake.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${fake.address().port}`;
    await launch();
  });
  after(async () => {
    await browser?.close();
    fake?.closeAllConnections();
    await new Promise((resolve) => (fake ? fake.close(resolve) : resolve()));
  });

  const chunk = (content) => `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
  const sseHead = (res) => res.writeHead(200, { 'content-type': 'text/event-stream' });

  test('an HTTP error shows its status and message; the turn is not kept and the question comes back', async () => {
    script = {
      vision: true,
      chat: (req, res) => {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: "messages[0].content[0].image_url.url: the image does not decode", type: 'invalid_request_error', param: null, code: 'invalid_value' } }));
      },
    };
    const { page, bodies, problems } = await open(base);
    await ask(page, 'Why?');
    const failed = await answer(page, 1);
    assert.equal(failed.state, 'error');
    assert.equal(await page.$eval('#error', (el) => el.textContent), 'HTTP 400 Bad Request: messages[0].content[0].image_url.url: the image does not decode');
    assert.equal(await page.$eval('#q', (el) => el.value), 'Why?');
    script.chat = (req, res) => {
      sseHead(res);
      res.end(chunk('fine') + 'data: [DONE]\n\n');
    };
    await page.keyboard.press('Enter');
    assert.equal((await answer(page, 2)).text, 'fine');
    assert.equal(bodies[1].json.messages.length, 1, 'the failed turn is not part of the history');
    assert.equal(await page.$eval('#error', (el) => el.textContent), '', 'a success clears the error');
    assert.deepEqual(problems, []);
    page0 = page;
  });

  test('an error event in the stream shows the error', async () => {
    script.chat = (req, res) => {
      sseHead(res);
      res.write(chunk('partial'));
      res.end(`data: ${JSON.stringify({ error: { message: 'The context is full', type: 'invalid_request_error', param: null, code: 'context_overflow' } })}\n\n`);
    };
    await ask(page0, 'More?');
    const failed = await answer(page0, 3);
    assert.equal(failed.state, 'error');
    assert.match(await page0.$eval('#error', (el) => el.textContent), /The context is full/);
  });

  test('a stream cut without [DONE] is an error, not a finished answer', async () => {
    script.chat = (req, res) => {
      sseHead(res);
      res.end(chunk('half an ans'));
    };
    await page0.$eval('#q', (el) => (el.value = ''));
    await ask(page0, 'Cut?');
    assert.equal((await answer(page0, 4)).state, 'error');
    assert.match(await page0.$eval('#error', (el) => el.textContent), /closed before the answer finished/);
  });

  test('Stop aborts the request and keeps what was shown; New chat clears', async () => {
    script.chat = (req, res) => {
      sseHead(res);
      let i = 0;
      const timer = setInterval(() => res.write(chunk(`word${i++} `)), 50);
      closed = new Promise((resolve) => res.on('close', () => resolve(clearInterval(timer))));
    };
    const { page, bodies, problems } = await open(base);
    await ask(page, 'Talk');
    await page.waitForFunction(() => /word2/.test(document.querySelector('#log .assistant .text').textContent));
    assert.equal(await page.$eval('#stop', (el) => el.hidden), false);
    await page.click('#stop');
    const stopped = await answer(page, 1);
    assert.equal(stopped.state, 'stopped');
    await closed; // the server sees the client leave (bounded by the test's timeout)
    assert.equal(await page.$eval('#stop', (el) => el.hidden), true);

    script.chat = (req, res) => {
      sseHead(res);
      res.end(chunk('ok') + 'data: [DONE]\n\n');
    };
    await ask(page, 'Go on');
    await answer(page, 2);
    assert.deepEqual(bodies[1].json.messages[1], { role: 'assistant', content: stopped.text }, 'the stopped answer, as shown, is in the history');

    await page.click('#new');
    assert.equal(await page.$$eval('#log .msg', (m) => m.length), 0);
    await ask(page, 'Fresh');
    await answer(page, 1);
    assert.equal(bodies[2].json.messages.length, 1, 'a new chat starts without history');
    assert.deepEqual(problems, []);
  });

  test('a text-only model hides the image picker', async () => {
    script.vision = false;
    const { page, problems } = await open(base);
    await page.waitForFunction(() => /scripted/.test(document.getElementById('model').textContent));
    assert.equal(await page.$eval('#pick', (el) => el.hidden), true);
    assert.deepEqual(problems, []);
  });
});
