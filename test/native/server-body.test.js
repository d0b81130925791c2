// Request bodies are parsed off the JS thread (issue 18): a 15 MB body with a data-URL image is
// answered as a small one with the same image while the event loop keeps ticking; bad JSON,
// bad data URLs and bad requests get the same status, code and message whether parsed inline
// (small bodies) or on the body thread; a body thread that dies costs its request a 503, not
// the server.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';
import { createServer, loadModel } from '../../dist/index.js';
import { decodeChatBody } from '../../dist/server/body-decode.js';
import { BodyParser, INLINE_MAX_BYTES } from '../../dist/server/body-parser.js';
import { imageHash } from '../../dist/server/images.js';
import { makeFixtures, readResponse, root } from '../helpers.js';

let fx, model, server, base, dataUrl;
before(async () => {
  fx = await makeFixtures();
  model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2, parallelSessions: 2, contextSize: 1024 });
  server = createServer(model, { parallel: 2, queue: 8 });
  base = `http://127.0.0.1:${(await server.listen(0)).port}`;
  dataUrl = `data:image/png;base64,${fx.images.pngBytes.toString('base64')}`;
});
after(async () => {
  await server?.close({ timeoutMs: 1000 });
  await model?.dispose();
  await fx?.cleanup();
});

/** POSTs raw bytes; `chunks` sends them in pieces without Content-Length (chunked). */
function post(body, { url = base, chunks = 1 } = {}) {
  return new Promise((resolve, reject) => {
    const bytes = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const headers = { 'content-type': 'application/json' };
    if (chunks === 1) headers['content-length'] = bytes.length;
    let answered = false;
    const req = httpRequest(`${url}/v1/chat/completions`, { method: 'POST', headers }, (res) => {
      answered = true;
      readResponse(res).then(resolve, reject);
    });
    // A 413 closes the connection while the body is still going out: the answer is what counts.
    req.on('error', (err) => answered || reject(err));
    const step = Math.ceil(bytes.length / chunks);
    for (let at = 0; at < bytes.length; at += step) req.write(bytes.subarray(at, at + step));
    req.end();
  });
}

const question = (url, text = 'What is in the picture?') => ({
  model: 'tiny',
  messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text }] }],
  temperature: 0,
  max_tokens: 8,
});

/** The fixture image as a data URL of about `bytes` bytes: its base64 with "%20" (spaces, skipped) between lines. */
function paddedDataUrl(bytes) {
  const b64 = fx.images.pngBytes.toString('base64');
  const lines = b64.match(/.{1,76}/g);
  const pad = '%20'.repeat(Math.ceil(bytes / 3 / lines.length));
  return `data:image/png;base64,${lines.join(pad)}`;
}

test('a 15 MB body answers as a small one with the same image, and the event loop keeps ticking', async (t) => {
  const small = await post(question(dataUrl));
  assert.equal(small.status, 200, small.text);
  const bigBody = Buffer.from(JSON.stringify(question(paddedDataUrl(15e6))));
  assert.ok(bigBody.length > 14e6, `${bigBody.length} bytes`);

  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const big = await post(bigBody);
  delay.disable();
  const worstMs = delay.max / 1e6;
  assert.equal(big.status, 200, big.text.slice(0, 500));
  assert.equal(big.json.choices[0].message.content, small.json.choices[0].message.content);
  // The same prompt; the big one finds it in a slot already (same image hash), hence no cached_tokens check.
  assert.equal(big.json.usage.prompt_tokens, small.json.usage.prompt_tokens);
  assert.equal(big.json.usage.completion_tokens, small.json.usage.completion_tokens);

  // The same parse on the JS thread, as the server did it before (the same rules: one function).
  const start = performance.now();
  const inline = decodeChatBody(bigBody, 20 << 20);
  const inlineMs = performance.now() - start;
  assert.deepEqual([...inline.images.values()][0].bytes, fx.images.pngBytes, 'the padded data URL holds the same image');
  t.diagnostic(`${(bigBody.length / 1e6).toFixed(1)} MB body: inline parse ${inlineMs.toFixed(1)} ms; longest event-loop delay while the server answered it ${worstMs.toFixed(1)} ms`);
  // Relative, not a wall-clock figure: a loaded machine slows both alike.
  assert.ok(worstMs < inlineMs / 2, `the event loop stalled ${worstMs.toFixed(1)} ms while a body whose inline parse takes ${inlineMs.toFixed(1)} ms was read`);
});

test('bad JSON, bad data URLs and bad requests answer alike from small bodies and from large ones', async () => {
  const padding = 'x'.repeat(INLINE_MAX_BYTES + 1000);
  const user = (content) => ({ messages: [{ role: 'user', content }] });
  const image = (url) => ({ type: 'image_url', image_url: { url } });
  const cases = [
    ['bad base64 character', user([image('data:image/png;base64,iVBO*w0KGgo='), { type: 'text', text: 'x' }]), 400, 'err_invalid_argument'],
    ['bad base64 padding', user([image('data:image/png;base64,iVBORw0KGgo=x')]), 400, 'err_invalid_argument'],
    ['bad base64 length', user([image('data:image/png;base64,iVBOR')]), 400, 'err_invalid_argument'],
    ['bad percent escape', user([image('data:image/png,abc%zz')]), 400, 'err_invalid_argument'],
    ['no comma', user([image('data:nonsense')]), 400, 'err_invalid_argument'],
    ['not a media type', user([image('data:not a type;base64,AAAA')]), 400, 'err_invalid_argument'],
    ['no data', user([image('data:image/png;base64,')]), 400, 'err_invalid_argument'],
    ['good image, then a bad one', user([image(dataUrl), image('data:image/png;base64,iVBO*w0KGgo=')]), 400, 'err_invalid_argument'],
    ['image that does not decode', user([image('data:image/png;base64,AAAA')]), 400, 'err_image_decode'],
    ['remote image without --allow-remote-images', user([image(`${base}/health`)]), 400, 'err_invalid_argument'],
    ['image as a plain string', user([{ type: 'image_url', image_url: 'data:image/png;base64,iVBOR' }]), 400, 'err_invalid_argument'],
    ['empty messages', { messages: [] }, 400, 'invalid_type'],
    ['n = 2', { ...user('hi'), n: 2 }, 400, 'unsupported_value'],
    ['image in an assistant message', { messages: [{ role: 'assistant', content: [image('data:image/png;base64,iVBOR')] }, ...user('hi').messages] }, 400, 'invalid_value'],
  ];
  for (const [name, body, status, code] of cases) {
    const small = await post(body);
    const big = await post({ ...body, x_padding: padding });
    assert.equal(small.status, status, `${name}: ${small.text}`);
    assert.equal(small.json.error.code, code, `${name}: ${small.text}`);
    assert.equal(big.status, status, `${name} (large): ${big.text.slice(0, 300)}`);
    assert.deepEqual(big.json, small.json, name);
  }
  // Bad JSON: the message is JSON.parse's own, after "The request body is not valid JSON: ".
  for (const text of ['{"messages": [', `{"x_padding": "${padding}", "messages": [`, `{"x_padding": "${padding}", "messages": [}]}`]) {
    const res = await post(text);
    let why;
    try {
      JSON.parse(text);
    } catch (err) {
      why = err.message;
    }
    assert.equal(res.status, 400, res.text);
    assert.deepEqual(res.json.error, { message: `The request body is not valid JSON: ${why}`, type: 'invalid_request_error', param: null, code: 'invalid_json' });
  }
  // Still serving.
  assert.equal((await post(question(dataUrl))).status, 200);
});

test('a body over --max-body is a 413, declared or chunked; one just under it is answered', async () => {
  const limited = createServer(model, { parallel: 1, maxBody: 100_000 });
  const url = `http://127.0.0.1:${(await limited.listen(0)).port}`;
  try {
    const over = JSON.stringify({ ...question(dataUrl), x_padding: 'x'.repeat(110_000) });
    for (const chunks of [1, 4]) {
      const res = await post(over, { url, chunks });
      assert.equal(res.status, 413, `${chunks} chunk(s): ${res.text}`);
      assert.equal(res.json.error.code, 'request_too_large');
      assert.match(res.json.error.message, /larger than 100000 bytes/);
    }
    const under = JSON.stringify({ ...question(dataUrl), x_padding: 'x'.repeat(90_000) });
    assert.ok(under.length > INLINE_MAX_BYTES && under.length < 100_000);
    for (const chunks of [1, 7]) {
      const res = await post(under, { url, chunks });
      assert.equal(res.status, 200, `${chunks} chunk(s): ${res.text}`);
    }
  } finally {
    await limited.close({ timeoutMs: 500 });
  }
});

/** Bytes as readBody gives them: segments of ArrayBuffers of their own. */
function segmentsOf(text, segmentBytes = 1 << 20) {
  const bytes = Buffer.from(text);
  const segments = [];
  for (let at = 0; at < bytes.length; at += segmentBytes) {
    const segment = new Uint8Array(new ArrayBuffer(Math.min(segmentBytes, bytes.length - at)));
    segment.set(bytes.subarray(at, at + segment.length));
    segments.push(segment);
  }
  return { segments, size: bytes.length };
}

/** A parse's outcome in a comparable form: the request with each image URL replaced by what it reads as. */
async function outcome(parsing) {
  let parsed;
  try {
    parsed = await parsing;
  } catch (err) {
    return { rejected: { name: err.constructor.name, status: err.status, message: err.message, type: err.type, code: err.code, param: err.param, headers: err.headers } };
  }
  const request = structuredClone(parsed.request);
  for (const m of request.messages) {
    for (const part of m.parts) {
      if (!('imageUrl' in part)) continue;
      try {
        const image = await parsed.readImage(part.imageUrl, { allowRemote: false, allowPrivate: false, maxBytes: 1000, timeoutMs: 1000 });
        assert.equal(image.hash, await imageHash(image.bytes));
        part.imageUrl = { bytes: image.bytes.toString('hex'), hash: image.hash };
      } catch (err) {
        part.imageUrl = { code: err.code, message: err.message };
      }
    }
  }
  return { request };
}

test('the parser gives the same result inline and on its thread, and transfers the bytes', async () => {
  const inline = new BodyParser({ inlineMaxBytes: Infinity });
  const threaded = new BodyParser({ inlineMaxBytes: -1 });
  try {
    const png = fx.images.pngBytes;
    const bodies = [
      JSON.stringify(question(`data:image/png;base64,${png.toString('base64')}`)),
      JSON.stringify(question(`data:image/png,${encodeURIComponent(png.subarray(0, 500).toString('latin1'))}`)),
      JSON.stringify(question(`data:image/png;base64,${png.toString('base64url').replace(/(.{60})/g, '$1\n')}`)),
      JSON.stringify(question(`DATA:;BASE64,${png.subarray(0, 999).toString('base64')}`)),
      JSON.stringify(question(`data:image/png;base64,${png.subarray(0, 1001).toString('base64')}`)),  // over the 1000-byte limit given below
      JSON.stringify(question('data:image/png;base64,%zz')),
      JSON.stringify(question('https://example.com/cat.png')),
      JSON.stringify({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: 'data:,%FF%00' }] }], stop: ['a', ''], seed: -1, stream: true, stream_options: { include_usage: true } }),
      '{"messages": [',
      '\u00ff{}',
      '',
      '{"messages": [{"role": "tool", "content": "x"}]}',
      '{"messages": [{"role": "user", "content": "caf\u00e9 \ud83d\ude00"}]}',
    ];
    for (const body of bodies) {
      const a = await outcome(inline.parse(segmentsOf(body), 1000));
      const b = await outcome(threaded.parse(segmentsOf(body, 7), 1000));
      assert.deepEqual(b, a, body.slice(0, 80));
    }
    // A transfer, not a copy: the segments the thread got are detached here.
    const body = segmentsOf(JSON.stringify(question(dataUrl)), 4096);
    const parsed = await threaded.parse(body, 1 << 20);
    assert.ok(body.segments.every((s) => s.byteLength === 0 && s.buffer.byteLength === 0));
    const image = await parsed.readImage(parsed.request.messages[0].parts[0].imageUrl, { allowRemote: false, allowPrivate: false, maxBytes: 1, timeoutMs: 1 });
    assert.deepEqual(image, { bytes: fx.images.pngBytes, hash: await imageHash(fx.images.pngBytes) });
  } finally {
    await inline.close();
    await threaded.close();
  }
});

test('a body thread that dies fails its request with a 503 and Retry-After; the next body gets a new thread', async () => {
  // The real thread, with a listener in front that ends it (7) or keeps it busy (8) on a marked request.
  const hook = `import { parentPort } from 'node:worker_threads';
    parentPort.on('message', (m) => {
      if (m.maxImageBytes === 7) process.exit(1);
      // Busy until terminated, so that close() finds the body still on the thread.
      if (m.maxImageBytes === 8) for (const end = Date.now() + 5000; Date.now() < end; );
    });`;
  const real = pathToFileURL(`${root}/dist/server/body-worker.js`).href;
  const source = `import ${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)}; import ${JSON.stringify(real)};`;
  const parser = new BodyParser({ inlineMaxBytes: -1, workerUrl: new URL(`data:text/javascript,${encodeURIComponent(source)}`) });
  const body = () => segmentsOf(JSON.stringify(question(dataUrl)));
  try {
    assert.equal((await parser.parse(body(), 1 << 20)).request.messages.length, 1);
    await assert.rejects(parser.parse(body(), 7), (err) => {
      assert.equal(err.status, 503);
      assert.equal(err.code, 'body_reader_failed');
      assert.equal(err.type, 'server_error');
      assert.deepEqual(err.headers, { 'retry-after': '1' });
      return true;
    });
    assert.equal((await parser.parse(body(), 1 << 20)).request.messages.length, 1);
    // Closing while a body is on the thread fails it as the server closing.
    const pending = parser.parse(body(), 8);
    await parser.close();
    await assert.rejects(pending, (err) => err.status === 503 && err.code === 'server_closing');
    await assert.rejects(parser.parse(body(), 1 << 20), { code: 'ERR_DISPOSED' });
  } finally {
    await parser.close();
  }
});
