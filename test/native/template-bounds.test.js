// Chat templates are code from a model file or the network: every way found to hang, exhaust
// or crash the renderer rejects with ERR_TEMPLATE in bounded time, the event loop keeps
// running meanwhile, and the process, the model and other sessions carry on (issue 15).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { Template } from '@huggingface/jinja';
import { loadModel } from '../../dist/index.js';
import { renderChat, TEMPLATE_LIMITS } from '../../dist/template.js';
import { CHATML_TEMPLATE } from '../../tools/fixtures/models.js';
import { makeFixtures, maxEventLoopLag, root } from '../helpers.js';

const run = promisify(execFile);
// Half the default: these tests wait for it several times; the messages follow the setting.
TEMPLATE_LIMITS.timeMs = 1000;
const limitText = `time limit of ${TEMPLATE_LIMITS.timeMs / 1000} s`;
const ctx = { bosText: '<s>', eosText: '</s>', addsBos: false };
const hi = [{ role: 'user', content: 'hi' }];
const greedy = { maxTokens: 2, temperature: 0 };
// Room for a loaded machine on top of the time limit; the bug took 13 s to kill the process.
const bound = () => TEMPLATE_LIMITS.timeMs + 3000;
const doubling = (what, op, times) => `{% set ns = namespace(v=${what}) %}{% for i in range(${times}) %}{% set ns.v = ns.v ${op} ns.v %}{% endfor %}`;

let fx, model;
before(async () => {
  fx = await makeFixtures();
  model = await loadModel({ model: fx.model, threads: 2 });
});
after(async () => {
  await model?.dispose();
  await fx?.cleanup();
});

async function sane() {
  assert.equal(await renderChat(CHATML_TEMPLATE, hi, ctx), '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
}

test('renders what @huggingface/jinja renders in-thread, with the BOS handling as before', async () => {
  const messages = Array.from({ length: 10 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `turn ${i}: ünïcödé 🙂 <|im_end|>` }));
  const source = `{{ bos_token }}${CHATML_TEMPLATE}{{ eos_token }}`;
  const expected = new Template(source).render({ messages, add_generation_prompt: true, bos_token: '<s>', eos_token: '</s>' });
  assert.equal(await renderChat(source, messages, ctx), expected);
  assert.equal(await renderChat(source, messages, { ...ctx, addsBos: true }), expected.slice('<s>'.length));
  assert.equal(await renderChat(source, messages, { bosText: null, eosText: null, addsBos: true }), expected.replaceAll(/<s>|<\/s>/g, ''));
  await assert.rejects(renderChat('{% for %}', hi, ctx), { code: 'ERR_TEMPLATE', message: /could not be rendered: .*template: 'none'/ });
});

const hostile = [
  ['the loop from the issue: range(1e9)', '{% for i in range(1000000000) %}{{ i }}{% endfor %}', /range\(\) would make 1000000000 items/],
  ['a string doubled until V8 refuses', doubling("'x'", '~', 100), /Invalid string length/],
  ["string repetition: 'x' * 10**9", "{{ 'x' * 10**9 }}", /could not be rendered/],
  ['output of 10 Mi characters', `${doubling("'xxxxxxxxxx'", '~', 20)}{{ ns.v }}`, /wrote 10485760 characters, over its limit of 4 Mi characters/],
  ['a list doubled without end', doubling('[1]', '+', 40), new RegExp(`${limitText}|out of memory`)],
  ['a macro that calls itself', '{% macro f(g) %}{{ g(g) }}{% endmacro %}{{ f(f) }}', /Maximum call stack/],
  ['10^10 loop iterations', '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}', new RegExp(`did not finish within its ${limitText}; it may loop`)],
  // Which limit it meets first depends on the machine: a fast one builds the 500 MB string in time.
  ['indent by 5e8 spaces', "{{ 'a\\nb' | indent(500000000) }}", /time limit|out of memory|Invalid string length|over its limit of \d+ Mi characters/],
];

for (const [name, source, message] of hostile) {
  test(`${name}: ERR_TEMPLATE in bounded time, the event loop free, the next render fine`, async () => {
    const t0 = performance.now();
    const lag = await maxEventLoopLag(() => assert.rejects(renderChat(source, hi, ctx), (err) => {
      assert.equal(err.code, 'ERR_TEMPLATE');
      assert.match(err.message, message);
      assert.match(err.message, /template: 'none'/);
      return true;
    }));
    const ms = performance.now() - t0;
    assert.ok(ms < bound(), `took ${ms.toFixed(0)} ms`);
    assert.ok(lag < 1000, `the event loop stalled for ${lag.toFixed(0)} ms`);
    await sane();
  });
}

test('a setInterval keeps ticking through a render that hits the time limit', async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  try {
    await assert.rejects(renderChat(hostile[6][1], hi, ctx), { code: 'ERR_TEMPLATE' });
  } finally {
    clearInterval(timer);
  }
  // 1 s at one tick per 20 ms is 50; a blocked thread gives 0 or 1.
  assert.ok(ticks >= 10, `${ticks} ticks`);
});

test('an AbortSignal stops a slow render at once; a queued render is not charged for it', async () => {
  const already = AbortSignal.abort(new Error('no'));
  await assert.rejects(renderChat(CHATML_TEMPLATE, hi, ctx, { signal: already }), { code: 'ERR_ABORTED', name: 'AbortError' });

  const slow = hostile[6][1];
  await sane(); // a renderer already running, so the abort lands on a render in flight
  const t0 = performance.now();
  const ac = new AbortController();
  const aborted = renderChat(slow, hi, ctx, { signal: ac.signal });
  const behind = renderChat(CHATML_TEMPLATE, hi, ctx);
  setTimeout(() => ac.abort(new Error('user')), 200);
  await assert.rejects(aborted, (err) => err.code === 'ERR_ABORTED' && err.cause?.message === 'user');
  assert.ok(performance.now() - t0 < TEMPLATE_LIMITS.timeMs, 'abort waited for the time limit');
  assert.match(await behind, /^<\|im_start\|>user/);

  // Aborting a render still waiting in the queue takes it out; the one running goes on.
  const running = renderChat(slow, hi, ctx);
  const ac2 = new AbortController();
  const queued = renderChat(CHATML_TEMPLATE, hi, ctx, { signal: ac2.signal });
  const last = renderChat(CHATML_TEMPLATE, hi, ctx);
  const t1 = performance.now();
  setTimeout(() => ac2.abort(), 100);
  await assert.rejects(queued, { code: 'ERR_ABORTED' });
  assert.ok(performance.now() - t1 < 1500, 'the queued render waited for the one running');
  await assert.rejects(running, { code: 'ERR_TEMPLATE', message: /time limit/ });
  assert.match(await last, /^<\|im_start\|>user/);
});

test('many renders at once come back in order with their own text', async () => {
  const all = await Promise.all(Array.from({ length: 50 }, (_, i) => renderChat(CHATML_TEMPLATE, [{ role: 'user', content: `n${i}` }], ctx)));
  all.forEach((text, i) => assert.equal(text, `<|im_start|>user\nn${i}<|im_end|>\n<|im_start|>assistant\n`));
});

test('createSession({ template }): a hostile template fails its session only', async () => {
  const bad = model.createSession({ template: hostile[0][1] });
  const good = model.createSession({ template: CHATML_TEMPLATE });
  const auto = model.createSession();
  await assert.rejects(bad.ask('hi', greedy), { code: 'ERR_TEMPLATE', message: /range\(\) would make/ });
  const slow = model.createSession({ template: hostile[6][1] });
  await assert.rejects(slow.ask('hi', greedy), { code: 'ERR_TEMPLATE', message: /time limit/ });
  const answer = await good.ask('hi', greedy);
  assert.equal(answer, await auto.ask('hi', greedy));
  await assert.rejects(bad.ask('hi', greedy), { code: 'ERR_TEMPLATE' });
  for (const s of [bad, good, auto, slow]) await s.dispose();
});

test("the GGUF's own tokenizer.chat_template: ERR_TEMPLATE, and an explicit template still works", async () => {
  const hostileFx = await makeFixtures({ llama: { chatTemplate: hostile[0][1] } });
  const m = await loadModel({ model: hostileFx.model, threads: 2 });
  try {
    assert.equal(m.info.chatTemplate, hostile[0][1]);
    await assert.rejects(m.createSession().ask('hi', greedy), { code: 'ERR_TEMPLATE', message: /range\(\) would make/ });
    assert.equal(typeof (await m.createSession({ template: CHATML_TEMPLATE }).ask('hi', greedy)), 'string');
  } finally {
    await m.dispose();
    await hostileFx.cleanup();
  }
});

// In child processes: these change the limits, or kill the process that owns the renderer.
const script = (body) => `import { renderChat, TEMPLATE_LIMITS } from ${JSON.stringify(`${root}/dist/template.js`)};
const ctx = { bosText: null, eosText: null, addsBos: false };
${body}`;
const node = (body, args = []) => run(process.execPath, ['--input-type=module', '-e', script(body), ...args], { timeout: 60_000 });

test('a template that exhausts the heap: ERR_TEMPLATE naming the memory limit, and this process lives', async () => {
  const { stdout } = await node(`TEMPLATE_LIMITS.timeMs = 60_000;
TEMPLATE_LIMITS.heapMb = 64;
await renderChat(${JSON.stringify(doubling('[1]', '+', 40))}, [], ctx).catch((e) => console.log(e.code, e.message));
console.log(await renderChat('fine', [], ctx));`);
  assert.match(stdout, /^ERR_TEMPLATE The chat template ran out of memory \((the renderer process was killed by SIG\w+|the renderer's worker reached its heap limit)\): .* 64 MiB memory limit\. Pass createSession\(\{ template: 'none' \}\)/);
  assert.match(stdout, /\nfine\n$/);
});

// Children of every thread: the renderer is forked by a thread of ours, not the main one.
const childrenOf = `readdirSync('/proc/self/task').map((t) => readFileSync(\`/proc/self/task/\${t}/children\`, 'utf8').trim()).filter(Boolean).join(' ')`;
const linux = existsSync(`/proc/self/task/${process.pid}/children`);

async function gone(pid, ms) {
  const t0 = performance.now();
  while (existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))) {
    if (performance.now() - t0 > ms) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

test('the renderer outlives a time limit; killed from outside mid-render: ERR_TEMPLATE saying so, and a fresh one next time', { skip: !linux && 'needs /proc children' }, async () => {
  await sane();
  const renderers = () => readdirSync('/proc/self/task').flatMap((t) => readFileSync(`/proc/self/task/${t}/children`, 'utf8').trim().split(/\s+/)).filter(Boolean)
    .filter((pid) => existsSync(`/proc/${pid}/cmdline`) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('template-child.js'));
  const [pid] = renderers();
  assert.ok(pid, 'no renderer among our children');
  // A time limit ends the render's worker thread, not the process: no new fork on our thread.
  await assert.rejects(renderChat(hostile[6][1], hi, ctx), { code: 'ERR_TEMPLATE', message: /time limit/ });
  await sane();
  assert.deepEqual(renderers(), [pid]);
  const slow = renderChat(hostile[6][1], hi, ctx);
  setTimeout(() => process.kill(Number(pid), 'SIGTERM'), 100);
  await assert.rejects(slow, { code: 'ERR_TEMPLATE', message: /renderer failed during the render \(the renderer process was killed by SIGTERM\)/ });
  await sane();
  assert.notEqual(renderers()[0], pid);
});

test('an idle renderer keeps no process alive and ends with it', { skip: !linux && 'needs /proc children' }, async () => {
  const t0 = performance.now();
  const { stdout } = await node(`import { readdirSync, readFileSync } from 'node:fs';
console.log(await renderChat('{{ messages[0].content }}', [{ role: 'user', content: 'hello' }], ctx));
console.log(${childrenOf});`);
  const [text, pid] = stdout.trim().split('\n');
  assert.equal(text, 'hello');
  assert.match(pid, /^\d+$/);
  assert.ok(performance.now() - t0 < 20_000);
  assert.ok(await gone(Number(pid), 5000), `renderer ${pid} outlived its parent`);
});

test('a renderer busy with an endless template dies when its parent is killed', { skip: !linux && 'needs /proc children' }, async () => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script(`import { readdirSync, readFileSync } from 'node:fs';
await renderChat('warm', [], ctx);
renderChat(${JSON.stringify(hostile[6][1])}, [], ctx);
setTimeout(() => console.log(${childrenOf}), 300);`)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  for await (const chunk of child.stdout) {
    out += chunk;
    if (out.includes('\n')) break;
  }
  const pid = Number(out.trim());
  assert.ok(pid > 0, out);
  child.kill('SIGKILL');
  assert.ok(await gone(pid, 10_000), `renderer ${pid} outlived its parent`);
});
