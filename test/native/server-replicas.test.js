// Scale past one machine: two `minigpt serve` replicas behind Debian's haproxy, the setup
// docs/serving.md describes. Through the balancer the official `openai` client gets the same
// greedy answers as the library; when one replica is stopped (SIGTERM) in the middle of a run
// of requests it finishes its running answer and exits 0, requests haproxy still sends it are
// retried on the other replica, its health check takes it out, and every request gets its
// correct answer. The client never retries (maxRetries: 0): the failover asserted here is
// haproxy's alone (retry-on + redispatch), so a config that lost it fails this test instead of
// being hidden by client retries. Run with Debian's haproxy; skipped when it is missing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { loadModel } from '../../dist/index.js';
import { collect, makeFixtures, root } from '../helpers.js';

const HAPROXY = '/usr/sbin/haproxy';
const CLI = join(root, 'dist', 'cli', 'index.js');
const skip = existsSync(HAPROXY) ? false : `haproxy is not installed (${HAPROXY} missing); on Debian/Ubuntu: apt-get install -y haproxy`;

// The replicas and the library answer with the same threads and context, so greedy answers match.
const THREADS = 1;
const CONTEXT = 1024;
const PARALLEL = 2;
const LOOP = 30;
const WORKERS = 4;
const STOP_AFTER = 10;  // loop requests from this index on start only once the replica was told to stop
const LONG_TOKENS = 900;  // long enough (a few hundred ms on 2 cores) to be generating when SIGTERM arrives

let fx, model, dataUrl, haproxy, client, fetches = 0;
const replicas = new Map();
const children = new Set();
const expected = new Map();

const conversations = {
  text: [{ role: 'user', content: 'Say something.' }],
  other: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Name a colour.' }],
  image: () => [{ role: 'user', content: [{ type: 'image_url', image_url: { url: dataUrl } }, { type: 'text', text: 'What is in the picture?' }] }],
  image2: () => [{ role: 'user', content: [{ type: 'text', text: 'Describe it.' }, { type: 'image_url', image_url: { url: dataUrl } }] }],
};
const messagesOf = (name) => (typeof conversations[name] === 'function' ? conversations[name]() : conversations[name]);

/** What the library answers for the same messages (the image as the same PNG bytes). */
async function libraryAnswer(messages, maxTokens) {
  const session = model.createSession();
  const image = await model.encodeImage(fx.images.pngBytes);
  try {
    const converted = messages.map((m) => ({
      role: m.role,
      content: typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? p.text : image)),
    }));
    return (await collect(session.chat(converted, { temperature: 0, maxTokens }))).text;
  } finally {
    await session.dispose();
    await image.dispose();
  }
}

function spawnChild(file, args) {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const info = { child, output: '', exit: undefined };
  child.stdout.on('data', (d) => (info.output += d));
  child.stderr.on('data', (d) => (info.output += d));
  info.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve((info.exit = { code, signal }))));
  children.add(info);
  return info;
}

/** Resolves with `value()` once it is truthy, polling every `every` ms; rejects after `ms`. */
async function until(what, value, ms = 30_000, every = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await value();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

/** GET /health on a replica directly: its status code, or the connection error's code. */
function health(port) {
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port, path: '/health', agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (err) => resolve(err.code ?? err.message));
  });
}

async function startReplica(name) {
  const info = spawnChild(process.execPath, [CLI, 'serve', '--model', fx.model, '--projector', fx.projector, '--host', '127.0.0.1', '--port', '0',
    '--parallel', String(PARALLEL), '--threads', String(THREADS), '--context-size', String(CONTEXT), '--no-ui', '--shutdown-timeout', '20']);
  // Port 0 and the line it prints: no window in which another process can take the port.
  info.port = await until(`replica ${name} to listen`, () => {
    if (info.exit) throw new Error(`replica ${name} exited (${JSON.stringify(info.exit)}) before listening:\n${info.output}`);
    return Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(info.output)?.[1]) || undefined;
  });
  await until(`replica ${name} /health to say 200`, async () => (await health(info.port)) === 200);
  replicas.set(name, info);
  return info;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * The balancer, as in docs/serving.md: round robin, health checks on /health every 200 ms
 * (one failure takes a replica out), and a request whose replica refused the connection,
 * dropped it without an answer or said 503 (shutting down) retried on the other one.
 */
function haproxyConfig(port, socket) {
  return `global
    stats socket ${socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503

frontend api
    bind 127.0.0.1:${port}
    default_backend minigpt

backend minigpt
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    # Which replica answered, for this test only.
    http-response set-header X-Replica %[srv_name]
    default-server inter 200ms fall 1 rise 1
${[...replicas].map(([name, r]) => `    server ${name} 127.0.0.1:${r.port} check`).join('\n')}
`;
}

/** One command on haproxy's admin socket; its answer. */
function haproxyCommand(socket, command) {
  return new Promise((resolve, reject) => {
    let text = '';
    const c = connect(socket, () => c.end(`${command}\n`));
    c.setTimeout(2000, () => c.destroy(new Error(`haproxy admin socket: no answer to ${command}`)));
    c.on('data', (d) => (text += d));
    c.on('error', reject);
    c.on('close', () => resolve(text));
  });
}

/** haproxy's `show stat`: one object per proxy/server row. */
async function haproxyStats(socket) {
  const [header, ...rows] = (await haproxyCommand(socket, 'show stat')).trim().split('\n');
  const keys = header.replace(/^# /, '').split(',');
  return rows.map((row) => Object.fromEntries(row.split(',').map((v, i) => [keys[i], v])));
}

async function serverState(socket) {
  const rows = await haproxyStats(socket);
  return Object.fromEntries(rows.filter((r) => r.pxname === 'minigpt').map((r) => [r.svname, r]));
}

async function startHaproxy() {
  const socket = join(fx.dir, 'haproxy.sock');
  const cfg = join(fx.dir, 'haproxy.cfg');
  // A free port can be taken between our probe and haproxy's bind: try again with another.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    await writeFile(cfg, haproxyConfig(port, socket));
    const info = spawnChild(HAPROXY, ['-f', cfg, '-db']);
    try {
      await until('haproxy to see both replicas up', async () => {
        if (info.exit) throw new Error(`haproxy exited (${JSON.stringify(info.exit)}):\n${info.output}`);
        if (!existsSync(socket)) return false;
        const s = await serverState(socket).catch(() => ({}));
        return [...replicas.keys()].every((name) => s[name]?.status === 'UP' && s[name]?.check_status === 'L7OK');
      }, 15_000);
      return Object.assign(info, { port, socket, cfg });
    } catch (err) {
      info.child.kill('SIGKILL');
      await info.exited;
      if (attempt >= 3 || !/cannot bind|Address already in use/i.test(info.output)) throw err;
    }
  }
}

function countBy(items, key) {
  const counts = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

/** One chat completion through the balancer: its text and which replica answered. */
async function ask(name, maxTokens = 8) {
  const { data, response } = await client.chat.completions.create({ model: 'tiny', messages: messagesOf(name), temperature: 0, max_tokens: maxTokens }).withResponse();
  return { text: data.choices[0].message.content, finish: data.choices[0].finish_reason, replica: response.headers.get('x-replica') };
}

describe('replicas behind haproxy', { skip, timeout: 180_000 }, () => {
  before(async () => {
    fx = await makeFixtures();
    dataUrl = `data:image/png;base64,${fx.images.pngBytes.toString('base64')}`;
    model = await loadModel({ model: fx.model, projector: fx.projector, threads: THREADS, contextSize: CONTEXT });
    for (const name of Object.keys(conversations)) expected.set(name, await libraryAnswer(messagesOf(name), 8));
    // One at a time: both load the model on the same two cores.
    await startReplica('a');
    await startReplica('b');
    haproxy = await startHaproxy();
    client = new OpenAI({
      baseURL: `http://127.0.0.1:${haproxy.port}/v1`,
      apiKey: 'unused',
      maxRetries: 0,
      timeout: 30_000,
      fetch: (url, init) => {
        fetches++;
        return fetch(url, init);
      },
    });
  });

  after(async () => {
    // Even when a test failed midway: nothing keeps running after this file.
    for (const info of children) if (!info.exit) info.child.kill('SIGKILL');
    await Promise.race([Promise.all([...children].map((c) => c.exited)), sleep(5000, undefined, { ref: false })]);
    await model?.dispose();
    await fx?.cleanup();
  });

  test('greedy answers through the balancer equal the library, from both replicas', async () => {
    assert.notEqual(expected.get('text'), expected.get('image'), 'the fixtures should answer text and image differently');
    const seen = new Set();
    for (const name of ['text', 'image', 'text', 'image']) {
      const got = await ask(name);
      assert.equal(got.text, expected.get(name), `${name} through replica ${got.replica}`);
      assert.equal(got.finish, 'length');
      seen.add(got.replica);
    }
    assert.deepEqual([...seen].sort(), ['a', 'b'], 'round robin should reach both replicas');
  });

  test('one replica stopped mid-run: it finishes its running answer and exits 0, every request still answered right', async (t) => {
    const names = Object.keys(conversations);
    const results = [];
    let done = 0;
    let stopSent;
    let stoppedNow;
    const stopped = new Promise((resolve) => (stoppedNow = resolve));
    const fetchesBefore = fetches;
    let victim;
    const healthSeen = [];
    let lastChunkAt;

    // A long streamed answer; the replica serving it is the one stopped, while it generates.
    const longRun = (async () => {
      await until('the first loop requests', () => done >= 3);
      const { data: stream, response } = await client.chat.completions.create({ model: 'tiny', messages: messagesOf('text'), temperature: 0, max_tokens: LONG_TOKENS, stream: true, stream_options: { include_usage: true } }).withResponse();
      victim = response.headers.get('x-replica');
      let text = '';
      let finish;
      let chunksAfterStop = 0;
      let usage;
      for await (const chunk of stream) {
        usage = chunk.usage ?? usage;
        const piece = chunk.choices[0]?.delta.content ?? '';
        text += piece;
        finish = chunk.choices[0]?.finish_reason ?? finish;
        if (stopSent) chunksAfterStop += piece ? 1 : 0;
        else if (piece) {
          const { port } = replicas.get(victim);
          // In production a replica that went away still gets requests until the balancer's
          // next health check (up to `inter`). Checks on it pause here so that window lasts
          // the whole loop, and the retries that cover it are exercised every run, not by luck.
          assert.equal(await haproxyCommand(haproxy.socket, `disable health minigpt/${victim}`), '\n');
          replicas.get(victim).child.kill('SIGTERM');
          stopSent = performance.now();
          // /health: 200 until the signal is handled, then 503 (closing) or the port closed.
          await until('the stopped replica to close its port', async () => {
            const status = await health(port);
            if (healthSeen.at(-1) !== status) healthSeen.push(status);
            return typeof status === 'string';
          }, 10_000, 2);
          stoppedNow();
        }
      }
      lastChunkAt = performance.now();
      return { text, finish, usage, chunksAfterStop };
    })();
    longRun.catch(() => stoppedNow());

    let next = 0;
    const worker = async () => {
      while (next < LOOP) {
        const i = next++;
        if (i >= STOP_AFTER) await stopped;
        const name = names[i % names.length];
        const started = performance.now();
        try {
          const got = await ask(name);
          results.push({ i, name, ...got, afterStop: stopSent !== undefined && started >= stopSent });
        } catch (err) {
          results.push({ i, name, error: `${err.status ?? ''} ${err.message}` });
        }
        done++;
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    const long = await longRun;

    const survivor = victim === 'a' ? 'b' : 'a';
    const exit = await Promise.race([replicas.get(victim).exited, sleep(30_000, undefined, { ref: false }).then(() => 'still running 30 s after SIGTERM')]);
    // Checks back on: the next one takes the stopped replica out.
    assert.equal(await haproxyCommand(haproxy.socket, `enable health minigpt/${victim}`), '\n');
    const stats = await until(`haproxy to mark ${victim} down`, async () => {
      const s = await serverState(haproxy.socket);
      return s[victim].status === 'DOWN' && s;
    }, 5000);
    const startedAfterStop = results.filter((r) => r.afterStop);
    t.diagnostic(`stopped replica ${victim}: exit ${JSON.stringify(exit)}, /health after SIGTERM: ${healthSeen.join(' -> ')}; ` +
      `long stream: ${long.chunksAfterStop} chunks after SIGTERM, its end ${Math.round(lastChunkAt - stopSent)} ms after it; loop: ${results.length} requests, ${startedAfterStop.length} started after SIGTERM, ` +
      `by replica ${JSON.stringify(countBy(results, (r) => r.replica ?? 'error'))}; ` +
      `client fetches ${fetches - fetchesBefore}; haproxy backend retries ${stats.BACKEND.wretr}, redispatches ${stats.BACKEND.wredis}, ` +
      `5xx to clients ${stats.BACKEND.hrsp_5xx}; ${victim}: status ${stats[victim].status} (${stats[victim].check_status}), ` +
      `retries ${stats[victim].wretr}, redispatches ${stats[victim].wredis}`);

    // The stopped replica finished the answer it was generating, then exited cleanly.
    // All its tokens: a cut stream has no usage chunk. Only its start is compared with the
    // library: sessions decoded in one batch with others round differently, and over hundreds
    // of greedy tokens of a random tiny model that flips near-ties (seen after about 600).
    assert.equal(long.usage?.completion_tokens, LONG_TOKENS);
    assert.equal(long.finish, 'length');
    assert.ok(long.text.startsWith(expected.get('text')), 'the long answer should begin with the 8-token one');
    assert.deepEqual(exit, { code: 0, signal: null }, replicas.get(victim).output);
    assert.match(replicas.get(victim).output, /SIGTERM: finishing running answers/);
    // Its /health stopped saying 200: 503 while closing, then the port closed.
    for (const status of healthSeen) assert.ok([200, 503, 'ECONNREFUSED', 'ECONNRESET'].includes(status), `health after SIGTERM: ${healthSeen}`);
    assert.equal(await health(replicas.get(victim).port), 'ECONNREFUSED');
    assert.equal(stats[survivor].status, 'UP');
    // Requests haproxy sent to it after it closed went to the other replica instead.
    assert.ok(Number(stats[victim].wredis) + Number(stats[victim].wretr) > 0, 'haproxy should have retried requests sent to the stopped replica');

    // Every request got its own correct answer, the client never retried, haproxy took care of it.
    assert.equal(results.length, LOOP);
    for (const r of results) {
      assert.equal(r.error, undefined, `request ${r.i} (${r.name}) failed: ${r.error}`);
      assert.equal(r.text, expected.get(r.name), `request ${r.i} (${r.name}) through replica ${r.replica}`);
    }
    assert.ok(startedAfterStop.length >= LOOP - STOP_AFTER, `${startedAfterStop.length} loop requests started after SIGTERM`);
    assert.equal(fetches - fetchesBefore, results.length + 1, 'maxRetries is 0: one fetch per request');
    // After its exit, only the survivor answers.
    for (const name of ['text', 'image']) {
      const got = await ask(name);
      assert.equal(got.replica, survivor);
      assert.equal(got.text, expected.get(name));
    }
  });
});
