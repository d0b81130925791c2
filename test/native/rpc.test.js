// A model split over two `minigpt rpc-server`s on 127.0.0.1 and this CPU answers exactly as it
// does locally (ggml's RPC backend; llama.cpp's own load report shows the layers on the remote
// devices), for a libmtmd projector and our BLIP-2 one; servers that are down, closed, speak
// another protocol or another version are typed errors, never an abort of the process.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { getRpcDevices, loadModel } from '../../dist/index.js';
import { writeTinyBlip2 } from '../../tools/fixtures/blip2.js';
import { makeFixtures } from '../helpers.js';

const cli = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'index.js');
const answerScript = join(import.meta.dirname, 'rpc-answer.js');
let fx, blip2;
const servers = [];

async function freePort() {
  const probe = createTcpServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address();
  await new Promise((r) => probe.close(r));
  return port;
}

async function startRpcServer() {
  const port = await freePort();
  const child = spawn(process.execPath, [cli, 'rpc-server', '--port', String(port), '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  servers.push(child);
  const endpoint = `127.0.0.1:${port}`;
  for (const deadline = Date.now() + 20_000; ; ) {
    try {
      await getRpcDevices([endpoint]);
      return { endpoint, child, output: () => output };
    } catch (err) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`rpc-server on ${endpoint} did not come up: ${output}`, { cause: err });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function answer(options, before) {
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [answerScript, JSON.stringify({ options, image: fx.images.png, before })], {
    env: { ...process.env, MINIGPT_LOG: 'info' },
    timeout: 120_000,
    maxBuffer: 64 << 20,
  });
  return { ...JSON.parse(stdout.trim().split('\n').at(-1)), log: stderr };
}

let a, b;
before(async () => {
  fx = await makeFixtures();
  blip2 = join(fx.dir, 'tiny-blip2.gguf');
  await writeTinyBlip2(blip2, { nEmbdText: 64 });
  [a, b] = await Promise.all([startRpcServer(), startRpcServer()]);
});
after(async () => {
  for (const s of servers) s.kill('SIGKILL');
  await fx?.cleanup();
});

test('getRpcDevices lists each server\'s device with its memory', async () => {
  const devices = await getRpcDevices([a.endpoint, b.endpoint]);
  assert.equal(devices.length, 2);
  assert.deepEqual(devices.map((d) => d.description), [a.endpoint, b.endpoint]);
  for (const d of devices) assert.ok(d.memoryTotal > 0 && d.memoryFree > 0, JSON.stringify(d));
});

for (const [name, projector] of [['a libmtmd projector', () => fx.projector], ['the BLIP-2 projector', () => blip2]]) {
  test(`split over two servers and this CPU, with ${name}: the same greedy tokens as locally`, { timeout: 240_000 }, async () => {
    const local = await answer({ model: fx.model, projector: projector() });
    // gpuLayers 2 of the tiny model's 3 (2 blocks and the output): block 0 stays on this CPU,
    // block 1 and the output layer go to the servers, one each.
    const split = await answer({ model: fx.model, projector: projector(), rpcServers: [a.endpoint, b.endpoint], gpuLayers: 2, tensorSplit: [1, 1] });
    assert.ok(local.text.length > 0 && local.pictured.length > 0);
    assert.equal(split.text, local.text);
    assert.equal(split.pictured, local.pictured);
    assert.equal(split.gpuLayers, 2);
    // llama.cpp's own load report: weights in a buffer on each remote device.
    for (const server of [a, b]) {
      const where = `RPC\\d+\\[${server.endpoint.replaceAll('.', '\\.')}\\] model buffer size`;
      assert.match(split.log, new RegExp(where), `no weights on ${server.endpoint} in:\n${split.log}`);
    }
    assert.match(split.log, /CPU_Mapped model buffer size/);
    assert.doesNotMatch(local.log, /RPC\d.*model buffer size/);
  });
}

test('a model loaded after a split one in the same process, without rpcServers, stays local', { timeout: 120_000 }, async () => {
  const { log } = await answer({ model: fx.model, projector: fx.projector }, { model: fx.model, rpcServers: [a.endpoint], isolate: false });
  const [first, second] = log.split('=== the model under test ===');
  assert.match(first, /RPC\d+\[.*\] model buffer size/, 'the first model was split');
  assert.doesNotMatch(second, /RPC\d+.*model buffer size/);
});

test('servers that are down, closed, or speak another protocol or version are ERR_BACKEND_LOAD naming them', { timeout: 60_000 }, async () => {
  const closed = await freePort();
  const http = createHttpServer((req, res) => res.end('hello')).listen(0, '127.0.0.1');
  // Answers the HELLO the way a server of protocol 6.3.1 would.
  const older = createTcpServer((socket) => {
    socket.once('data', () => {
      const rsp = Buffer.alloc(8 + 28);
      rsp.writeBigUInt64LE(28n, 0);
      rsp.writeUInt8(6, 8);
      rsp.writeUInt8(3, 9);
      rsp.writeUInt8(1, 10);
      socket.end(rsp);
    });
  }).listen(0, '127.0.0.1');
  // Accepts and hangs up.
  const hangup = createTcpServer((socket) => socket.destroy()).listen(0, '127.0.0.1');
  await Promise.all([http, older, hangup].map((s) => new Promise((r) => (s.listening ? r() : s.once('listening', r)))));
  try {
    const cases = [
      [`127.0.0.1:${closed}`, /refused/],
      [`127.0.0.1:${http.address().port}`, /not an RPC server/],
      [`127.0.0.1:${older.address().port}`, /protocol 6\.3\.1.*7\.0/],
      [`127.0.0.1:${hangup.address().port}`, /closed the connection|ECONNRESET|not an RPC server/],
      ['no-such-host.invalid:50052', /does not resolve/],
    ];
    for (const [endpoint, why] of cases) {
      await assert.rejects(loadModel({ model: fx.model, threads: 1, rpcServers: [a.endpoint, endpoint] }), (err) => {
        assert.equal(err.code, 'ERR_BACKEND_LOAD', err.message);
        assert.ok(err.message.includes(endpoint), err.message);
        assert.match(err.message, why);
        return true;
      });
    }
    // The process lived through all of them, and the servers still work.
    const m = await loadModel({ model: fx.model, threads: 1, rpcServers: [a.endpoint, b.endpoint] });
    assert.ok((await m.createSession().ask('Hi', { temperature: 0, maxTokens: 4 })).length > 0);
    await m.dispose();
  } finally {
    for (const s of [http, older, hangup]) s.close();
  }
});

test('a server killed mid-stream: ERR_BACKEND_LOST naming it on the stream, the app lives and loads again', { timeout: 120_000 }, async () => {
  const doomed = await startRpcServer();
  // Isolated by default with rpcServers: ggml's client aborts the process that holds the model.
  const model = await loadModel({ model: fx.model, threads: 1, contextSize: 1024, rpcServers: [a.endpoint, doomed.endpoint] });
  const session = model.createSession();
  let pieces = 0;
  const started = performance.now();
  await assert.rejects(
    (async () => {
      for await (const _ of session.stream('Go on and on.', { temperature: 0, maxTokens: 100_000 })) {
        if (++pieces === 3) doomed.child.kill('SIGKILL');
      }
    })(),
    (err) => {
      assert.equal(err.code, 'ERR_BACKEND_LOST');
      assert.ok(err.message.includes(doomed.endpoint), err.message);
      assert.ok(!err.message.includes(a.endpoint), err.message);
      return true;
    },
  );
  assert.ok(pieces < 200, `${pieces} pieces after the kill`);
  assert.ok(performance.now() - started < 60_000);
  await assert.rejects(model.createSession().ask('Still there?'), { code: 'ERR_BACKEND_LOST' });
  await model.dispose();
  const again = await loadModel({ model: fx.model, threads: 1, rpcServers: [a.endpoint] });
  assert.ok((await again.createSession().ask('Hi', { temperature: 0, maxTokens: 4 })).length > 0);
  await again.dispose();
});

test('malformed rpcServers and tensorSplit are ERR_INVALID_ARGUMENT before anything connects', async () => {
  for (const rpcServers of [[], ['localhost'], ['[::1]:50052'], ['h:0'], ['h:99999'], [42], 'h:1', [a.endpoint, a.endpoint]]) {
    await assert.rejects(loadModel({ model: fx.model, rpcServers }), { code: 'ERR_INVALID_ARGUMENT' }, JSON.stringify(rpcServers));
  }
  await assert.rejects(loadModel({ model: fx.model, tensorSplit: [1] }), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(loadModel({ model: fx.model, rpcServers: [a.endpoint], tensorSplit: [-1] }), { code: 'ERR_INVALID_ARGUMENT' });
  await assert.rejects(loadModel({ model: fx.model, rpcServers: [a.endpoint], gpuLayers: 'auto' }), { code: 'ERR_INVALID_ARGUMENT' });
  // One share per device: two for one server is refused by the loader, not by ggml.
  await assert.rejects(loadModel({ model: fx.model, rpcServers: [a.endpoint], tensorSplit: [1, 1] }), { code: 'ERR_INVALID_ARGUMENT' });
});

test('rpc-server refuses an address it cannot listen on, with its reason, and exits', { timeout: 30_000 }, async () => {
  const port = Number(a.endpoint.split(':')[1]);  // taken by server a
  const { code, stderr } = await new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, 'rpc-server', '--port', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (c) => resolve({ code: c, stderr: err }));
  });
  assert.equal(code, 1);
  assert.match(stderr, /ERR_BACKEND_LOAD/);
  assert.match(stderr, new RegExp(`127\\.0\\.0\\.1:${port}`));
});
