// The server's Prometheus metrics, read back through the text exposition format
// (https://prometheus.io/docs/instrumenting/exposition_formats/): the parser below checks
// the format's rules itself rather than trusting prom-client's output.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { register as globalRegistry } from 'prom-client';
import { METRIC_ROUTES, ServerMetrics } from '../../dist/server/metrics.js';

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(s) {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  assert.match(s, /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/, `not a float: ${s}`);
  return Number(s);
}

// `a="x",b="y\"z"` -> { a: 'x', b: 'y"z' }, per the format's escaping (\\, \", \n).
function parseLabels(s) {
  const labels = {};
  let i = 0;
  while (i < s.length) {
    const eq = s.indexOf('=', i);
    assert.ok(eq > i, `label without a name in {${s}}`);
    const name = s.slice(i, eq);
    assert.match(name, LABEL);
    assert.equal(s[eq + 1], '"', `label ${name} value not quoted`);
    let j = eq + 2;
    let value = '';
    for (; s[j] !== '"'; j++) {
      assert.ok(j < s.length, `unterminated label value in {${s}}`);
      if (s[j] === '\\') {
        j++;
        value += s[j] === 'n' ? '\n' : s[j];
      } else value += s[j];
    }
    assert.ok(!(name in labels), `label ${name} repeated`);
    labels[name] = value;
    i = j + 1;
    if (s[i] === ',') i++;
    else assert.equal(i, s.length, `junk after label ${name} in {${s}}`);
  }
  return labels;
}

/**
 * Parses exposition text into Map(family name -> { help, type, samples: [{ name, labels, value }] }),
 * asserting: each family has one HELP and one TYPE line before its samples, its samples are
 * contiguous, sample names belong to the family (histograms: _bucket/_sum/_count), no two
 * samples share name and labels, and the text ends with a newline.
 */
function parse(text) {
  assert.ok(text.endsWith('\n'), 'exposition text must end with a newline');
  const families = new Map();
  const closed = new Set();
  let cur = null;
  const open = (name) => {
    assert.match(name, NAME);
    if (cur?.name === name) return cur;
    assert.ok(!families.has(name), `family ${name} appears twice`);
    if (cur) closed.add(cur.name);
    cur = { name, help: undefined, type: undefined, samples: [], seen: new Set() };
    families.set(name, cur);
    return cur;
  };
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') continue;
    let m;
    if ((m = /^# HELP (\S+) (.*)$/.exec(line))) {
      const f = open(m[1]);
      assert.equal(f.help, undefined, `second HELP for ${m[1]}`);
      assert.equal(f.samples.length, 0, `HELP for ${m[1]} after its samples`);
      f.help = m[2];
    } else if ((m = /^# TYPE (\S+) (\S+)$/.exec(line))) {
      const f = open(m[1]);
      assert.equal(f.type, undefined, `second TYPE for ${m[1]}`);
      assert.equal(f.samples.length, 0, `TYPE for ${m[1]} after its samples`);
      assert.match(m[2], /^(counter|gauge|histogram|summary|untyped)$/);
      f.type = m[2];
    } else if (line.startsWith('#')) {
      continue;
    } else {
      m = /^([^\s{]+)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
      assert.ok(m, `malformed sample line: ${line}`);
      const [, name, labelText, value] = m;
      assert.ok(cur, `sample before any HELP/TYPE: ${line}`);
      const suffixes = cur.type === 'histogram' ? ['_bucket', '_sum', '_count'] : [''];
      assert.ok(suffixes.some((s) => name === cur.name + s), `sample ${name} outside its family (current ${cur.name})`);
      assert.ok(!closed.has(name), `samples of ${name} not contiguous`);
      const labels = labelText ? parseLabels(labelText) : {};
      const key = name + JSON.stringify(Object.entries(labels).sort());
      assert.ok(!cur.seen.has(key), `duplicate sample ${line}`);
      cur.seen.add(key);
      cur.samples.push({ name, labels, value: parseValue(value) });
    }
  }
  for (const f of families.values()) {
    assert.ok(f.help !== undefined && f.type !== undefined, `${f.name} lacks HELP or TYPE`);
    delete f.seen;
  }
  return families;
}

const render = async (metrics) => parse(await metrics.render());

function family(fams, name, type) {
  const f = fams.get(name);
  assert.ok(f, `no metric family ${name}`);
  assert.equal(f.type, type, `type of ${name}`);
  assert.ok(f.help.length > 0, `empty HELP for ${name}`);
  return f;
}

// The single value of an unlabelled counter or gauge.
function scalar(fams, name, type) {
  const f = family(fams, name, type);
  assert.equal(f.samples.length, 1, `${name} should have one sample`);
  assert.deepEqual(f.samples[0].labels, {});
  return f.samples[0].value;
}

const sameLabels = (a, b) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());

/**
 * One series of a histogram, with the format's rules checked: `le` strictly increasing and
 * ending at +Inf, cumulative counts never decreasing, +Inf bucket equal to _count, one _sum.
 */
function histogram(fams, name, labels = {}) {
  const f = family(fams, name, 'histogram');
  const buckets = f.samples
    .filter((s) => s.name === `${name}_bucket`)
    .filter((s) => {
      const { le, ...rest } = s.labels;
      assert.ok(le !== undefined, `${name}_bucket without le`);
      return sameLabels(rest, labels);
    })
    .map((s) => [parseValue(s.labels.le), s.value]);
  assert.ok(buckets.length > 1, `${name}${JSON.stringify(labels)} has no buckets`);
  for (let i = 1; i < buckets.length; i++) {
    assert.ok(buckets[i][0] > buckets[i - 1][0], `${name}: le not increasing at ${buckets[i][0]}`);
    assert.ok(buckets[i][1] >= buckets[i - 1][1], `${name}: bucket counts not cumulative at le=${buckets[i][0]}`);
  }
  assert.equal(buckets.at(-1)[0], Infinity, `${name}: last bucket must be le="+Inf"`);
  const one = (suffix) => {
    const s = f.samples.filter((x) => x.name === name + suffix && sameLabels(x.labels, labels));
    assert.equal(s.length, 1, `${name}${suffix}${JSON.stringify(labels)}`);
    return s[0].value;
  };
  const count = one('_count');
  const sum = one('_sum');
  assert.equal(buckets.at(-1)[1], count, `${name}: +Inf bucket != _count`);
  return { bounds: buckets.slice(0, -1).map((b) => b[0]), buckets, sum, count };
}

// What the buckets must hold for `values`, straight from the format's definition
// (bucket `le` counts observations <= le).
const expectedBuckets = (bounds, values) => [...bounds, Infinity].map((le) => [le, values.filter((v) => v <= le).length]);
const total = (values) => values.reduce((a, b) => a + b, 0);

test('the format checker itself rejects text that breaks the format', () => {
  const h = (lines) => `# HELP h_seconds x\n# TYPE h_seconds histogram\n${lines.join('\n')}\n`;
  const good = ['h_seconds_bucket{le="0.1"} 1', 'h_seconds_bucket{le="1"} 2', 'h_seconds_bucket{le="+Inf"} 2', 'h_seconds_sum 0.6', 'h_seconds_count 2'];
  assert.equal(histogram(parse(h(good)), 'h_seconds').count, 2);
  const broken = [
    h(['h_seconds_bucket{le="0.1"} 2', 'h_seconds_bucket{le="1"} 1', 'h_seconds_bucket{le="+Inf"} 2', 'h_seconds_sum 0.6', 'h_seconds_count 2']),
    h(['h_seconds_bucket{le="0.1"} 1', 'h_seconds_bucket{le="1"} 2', 'h_seconds_bucket{le="+Inf"} 2', 'h_seconds_sum 0.6', 'h_seconds_count 3']),
    h(['h_seconds_bucket{le="0.1"} 1', 'h_seconds_bucket{le="1"} 2', 'h_seconds_sum 0.6', 'h_seconds_count 2']),
    h(['h_seconds_bucket{le="1"} 1', 'h_seconds_bucket{le="0.1"} 1', 'h_seconds_bucket{le="+Inf"} 2', 'h_seconds_sum 0.6', 'h_seconds_count 2']),
    h(good.filter((l) => !l.startsWith('h_seconds_sum'))),
    h([...good, 'other_total 1']),
    h(good).slice(0, -1),
  ];
  for (const text of broken) assert.throws(() => histogram(parse(text), 'h_seconds'), assert.AssertionError, text);
  const brokenFlat = [
    '# TYPE c_total counter\nc_total 1\n',
    '# HELP c_total x\nc_total 1\n# TYPE c_total counter\n',
    '# HELP c_total x\n# TYPE c_total counter\nc_total{a=b} 1\n',
    '# HELP c_total x\n# TYPE c_total counter\nc_total{a="1"} 1\nc_total{a="1"} 2\n',
    '# HELP c_total x\n# TYPE c_total counter\nc_total one\n',
  ];
  assert.equal(parse('# HELP c_total x\n# TYPE c_total counter\nc_total{a="1"} 1\n').get('c_total').samples[0].value, 1);
  for (const text of brokenFlat) assert.throws(() => parse(text), assert.AssertionError, text);
});

test('every metric is exposed with HELP, TYPE and its starting value before anything is recorded', async () => {
  const m = new ServerMetrics();
  assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
  const fams = await render(m);
  for (const name of [
    'minigpt_prompt_tokens_total',
    'minigpt_prompt_tokens_reused_total',
    'minigpt_completion_tokens_total',
    'minigpt_image_cache_hits_total',
    'minigpt_image_cache_misses_total',
  ]) assert.equal(scalar(fams, name, 'counter'), 0, name);
  for (const name of ['minigpt_queue_depth', 'minigpt_slots_busy', 'minigpt_slots_total']) assert.equal(scalar(fams, name, 'gauge'), 0, name);
  family(fams, 'minigpt_http_requests_total', 'counter');
  family(fams, 'minigpt_request_duration_seconds', 'histogram');
  assert.equal(histogram(fams, 'minigpt_time_to_first_token_seconds').count, 0);
  assert.equal(histogram(fams, 'minigpt_time_per_output_token_seconds').count, 0);
  for (const name of fams.keys()) assert.match(name, /^minigpt_/, 'no unprefixed (process) metrics');
});

test('requests are counted by route and status, with the route reduced to a fixed set', async () => {
  const m = new ServerMetrics();
  m.requestFinished('/v1/chat/completions', 200, 1);
  m.requestFinished('/v1/chat/completions?stream=1', 200, 1);
  m.requestFinished('/v1/chat/completions', 400, 0.01);
  m.requestFinished('/v1/models', 200, 0.001);
  m.requestFinished('/v1/models/minigpt-4', 404, 0.001);
  m.requestFinished('/health', 503, 0.001);
  m.requestFinished('/metrics', 200, 0.002);
  m.requestFinished('/', 200, 0.003);
  m.requestFinished('/etc/passwd', 404, 0.001);
  m.requestFinished('/v1/chat/completions/x', 404, 0.001);
  m.requestFinished('/v1/models/', 404, 0.001);
  m.requestFinished('', 400, 0.001);
  m.requestFinished('/health', 999, 0.001);
  m.requestFinished('/health', 200.5, 0.001);
  const f = family(await render(m), 'minigpt_http_requests_total', 'counter');
  const got = Object.fromEntries(f.samples.map((s) => {
    assert.deepEqual(Object.keys(s.labels).sort(), ['route', 'status']);
    return [`${s.labels.route} ${s.labels.status}`, s.value];
  }));
  assert.deepEqual(got, {
    '/v1/chat/completions 200': 2,
    '/v1/chat/completions 400': 1,
    '/v1/models 200': 1,
    '/v1/models/:id 404': 1,
    '/health 503': 1,
    '/metrics 200': 1,
    '/ 200': 1,
    'other 404': 3,
    'other 400': 1,
    '/health other': 2,
  });
});

test('any number of distinct URLs gives at most the fixed set of route labels', async () => {
  const m = new ServerMetrics();
  for (let i = 0; i < 2000; i++) m.requestFinished(`/${i.toString(36)}/${'x'.repeat(i % 7)}?q=${i}`, 200 + (i % 3), 0.001);
  const f = family(await render(m), 'minigpt_http_requests_total', 'counter');
  assert.deepEqual([...new Set(f.samples.map((s) => s.labels.route))], ['other']);
  assert.equal(f.samples.length, 3);
  assert.equal(total(f.samples.map((s) => s.value)), 2000);
  assert.ok(METRIC_ROUTES.length <= 10);
});

test('request durations go to a histogram per route', async () => {
  const m = new ServerMetrics();
  const chat = [0.004, 0.05, 0.05, 0.7, 12, 400];
  for (const s of chat) m.requestFinished('/v1/chat/completions', 200, s);
  m.requestFinished('/health', 200, 0.0002);
  const fams = await render(m);
  const h = histogram(fams, 'minigpt_request_duration_seconds', { route: '/v1/chat/completions' });
  assert.deepEqual(h.buckets, expectedBuckets(h.bounds, chat));
  assert.equal(h.count, chat.length);
  assert.ok(Math.abs(h.sum - total(chat)) < 1e-9);
  const health = histogram(fams, 'minigpt_request_duration_seconds', { route: '/health' });
  assert.deepEqual(health.buckets, expectedBuckets(health.bounds, [0.0002]));
  assert.ok(h.bounds[0] <= 0.005 && h.bounds.at(-1) >= 60, `duration buckets ${h.bounds}`);
});

test('token counters add up', async () => {
  const m = new ServerMetrics();
  m.tokens({ prompt: 120, reused: 0, completion: 30 });
  m.tokens({ prompt: 150, reused: 118, completion: 12 });
  m.tokens({ completion: 5 });
  m.tokens({});
  const fams = await render(m);
  assert.equal(scalar(fams, 'minigpt_prompt_tokens_total', 'counter'), 270);
  assert.equal(scalar(fams, 'minigpt_prompt_tokens_reused_total', 'counter'), 118);
  assert.equal(scalar(fams, 'minigpt_completion_tokens_total', 'counter'), 47);
});

test('queue and slot gauges hold the last value set', async () => {
  const m = new ServerMetrics();
  m.setSlots(2, 4);
  m.setQueueDepth(7);
  m.setSlots(3, 4);
  m.setQueueDepth(2);
  const fams = await render(m);
  assert.equal(scalar(fams, 'minigpt_queue_depth', 'gauge'), 2);
  assert.equal(scalar(fams, 'minigpt_slots_busy', 'gauge'), 3);
  assert.equal(scalar(fams, 'minigpt_slots_total', 'gauge'), 4);
});

test('time to first token: buckets from 10 ms to 60 s, counts per the format', async () => {
  const m = new ServerMetrics();
  const values = [0.003, 0.01, 0.0100001, 0.3, 0.3, 2, 59.9, 60, 61, 3600];
  for (const v of values) m.firstToken(v);
  const h = histogram(await render(m), 'minigpt_time_to_first_token_seconds');
  assert.equal(h.bounds[0], 0.01);
  assert.equal(h.bounds.at(-1), 60);
  assert.ok(h.bounds.length >= 8, `too coarse: ${h.bounds}`);
  assert.deepEqual(h.buckets, expectedBuckets(h.bounds, values));
  assert.equal(h.count, values.length);
  assert.ok(Math.abs(h.sum - total(values)) < 1e-9);
});

test('time per output token: buckets from 1 ms to 5 s, counts per the format', async () => {
  const m = new ServerMetrics();
  const values = [0.0005, 0.001, 0.002, 0.002, 0.02, 0.02, 0.02, 0.15, 4.99, 5, 9];
  for (const v of values) m.tokenGap(v);
  const h = histogram(await render(m), 'minigpt_time_per_output_token_seconds');
  assert.equal(h.bounds[0], 0.001);
  assert.equal(h.bounds.at(-1), 5);
  assert.ok(h.bounds.length >= 8, `too coarse: ${h.bounds}`);
  assert.deepEqual(h.buckets, expectedBuckets(h.bounds, values));
  assert.equal(h.count, values.length);
  assert.ok(Math.abs(h.sum - total(values)) < 1e-9);
});

test('image cache hits and misses are counted apart', async () => {
  const m = new ServerMetrics();
  m.imageCache(false);
  m.imageCache(true);
  m.imageCache(true);
  m.imageCache(true);
  const fams = await render(m);
  assert.equal(scalar(fams, 'minigpt_image_cache_hits_total', 'counter'), 3);
  assert.equal(scalar(fams, 'minigpt_image_cache_misses_total', 'counter'), 1);
});

test('two instances do not share values, and neither touches the global registry', async () => {
  const a = new ServerMetrics();
  const b = new ServerMetrics();
  a.requestFinished('/health', 200, 0.001);
  a.tokens({ prompt: 10, completion: 3 });
  a.setSlots(1, 2);
  a.firstToken(0.5);
  b.tokens({ prompt: 7 });
  b.setSlots(0, 8);
  b.imageCache(true);
  const fa = await render(a);
  const fb = await render(b);
  assert.equal(scalar(fa, 'minigpt_prompt_tokens_total', 'counter'), 10);
  assert.equal(scalar(fb, 'minigpt_prompt_tokens_total', 'counter'), 7);
  assert.equal(scalar(fb, 'minigpt_completion_tokens_total', 'counter'), 0);
  assert.equal(scalar(fa, 'minigpt_slots_total', 'gauge'), 2);
  assert.equal(scalar(fb, 'minigpt_slots_total', 'gauge'), 8);
  assert.equal(scalar(fa, 'minigpt_image_cache_hits_total', 'counter'), 0);
  assert.equal(family(fa, 'minigpt_http_requests_total', 'counter').samples.length, 1);
  assert.equal(family(fb, 'minigpt_http_requests_total', 'counter').samples.length, 0);
  assert.equal(histogram(fa, 'minigpt_time_to_first_token_seconds').count, 1);
  assert.equal(histogram(fb, 'minigpt_time_to_first_token_seconds').count, 0);
  assert.doesNotMatch(await globalRegistry.metrics(), /minigpt_/);
});

test('values that are not finite numbers >= 0 are dropped, never thrown', async () => {
  const m = new ServerMetrics();
  const bad = [-1, NaN, Infinity, -Infinity, '3', null, undefined, {}];
  for (const v of bad) {
    m.requestFinished('/health', 200, v);
    m.tokens({ prompt: v, reused: v, completion: v });
    m.setQueueDepth(v);
    m.setSlots(v, v);
    m.firstToken(v);
    m.tokenGap(v);
  }
  m.tokens(null);
  m.tokens(undefined);
  m.requestFinished(undefined, undefined, undefined);
  const fams = await render(m);
  assert.equal(scalar(fams, 'minigpt_prompt_tokens_total', 'counter'), 0);
  assert.equal(scalar(fams, 'minigpt_prompt_tokens_reused_total', 'counter'), 0);
  assert.equal(scalar(fams, 'minigpt_completion_tokens_total', 'counter'), 0);
  assert.equal(scalar(fams, 'minigpt_queue_depth', 'gauge'), 0);
  assert.equal(histogram(fams, 'minigpt_time_to_first_token_seconds').count, 0);
  assert.equal(histogram(fams, 'minigpt_time_per_output_token_seconds').count, 0);
  // The request itself still counts: it was answered, only its duration was unusable.
  const req = family(fams, 'minigpt_http_requests_total', 'counter').samples;
  assert.deepEqual(req.map((s) => [s.labels.route, s.labels.status, s.value]).sort(), [['/health', '200', bad.length], ['other', 'other', 1]]);
  assert.deepEqual(family(fams, 'minigpt_request_duration_seconds', 'histogram').samples, []);
});

// promtool (Debian's `prometheus` package) is Prometheus' own linter for this format.
let promtool = null;
try {
  execFileSync('promtool', ['--version'], { stdio: 'ignore' });
  promtool = 'promtool';
} catch {}

test('promtool accepts the exposition text', { skip: promtool ? false : 'promtool not installed' }, async () => {
  const m = new ServerMetrics();
  m.requestFinished('/v1/chat/completions', 200, 1);
  m.tokens({ prompt: 1, reused: 1, completion: 1 });
  m.firstToken(0.1);
  m.tokenGap(0.01);
  const dir = mkdtempSync(join(tmpdir(), 'minigpt-metrics-'));
  try {
    const file = join(dir, 'metrics.txt');
    writeFileSync(file, await m.render());
    const out = execFileSync('sh', ['-c', `${promtool} check metrics < "${file}" 2>&1`], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(out.trim(), '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
