// Turns one run's results into the printed table, docs/benchmarks.md and docs/benchmarks.svg,
// so the three always show the same numbers.
import { summary } from './workload.mjs';

const FIGURES = [
  { key: 'encodeMs', label: 'encode ms', lower: true, digits: 0 },
  { key: 'ttftMs', label: 'TTFT ms', lower: true, digits: 0 },
  { key: 'prefillTokS', label: 'prefill tok/s', lower: false, digits: 1 },
  { key: 'decodeTokS', label: 'decode tok/s', lower: false, digits: 2 },
  { key: 'peakRssMiB', label: 'peak RSS MiB', lower: true, digits: 0, perProcess: true },
  { key: 'lagP99Ms', label: 'loop lag p99 ms', lower: true, digits: 2 },
  { key: 'jsMsPerToken', label: 'JS CPU ms/token', lower: true, digits: 3 },
];

export const NAMES = {
  ours: 'minigpt-node',
  'ours-prebuild': 'minigpt-node prebuild',
  'llama-bench': 'llama-bench',
  'mtmd-cli': 'llama-mtmd-cli',
  fugood: '@fugood/llama.node',
  'node-llama-cpp': 'node-llama-cpp',
  torch: 'PyTorch reference',
};
const COLORS = { ours: '#1f6feb', 'ours-prebuild': '#54aeff', 'llama-bench': '#8b949e', 'mtmd-cli': '#6e7781', fugood: '#d29922', 'node-llama-cpp': '#2da44e', torch: '#cf222e' };

// Lags below this are noise of the measurement itself (the histogram's clock): no ratio.
const LAG_FLOOR_MS = 0.05;

/** Median and best (min of costs, max of rates) of each figure of one case. */
export function figuresOf(c) {
  const out = {};
  for (const f of FIGURES) {
    if (f.perProcess) {
      out[f.key] = { median: c[f.key] ?? NaN, best: c[f.key] ?? NaN };
      continue;
    }
    const s = summary((c.runs ?? []).map((r) => r[f.key]));
    out[f.key] = { median: s.median, best: f.lower ? s.min : s.max, worst: f.lower ? s.max : s.min, n: s.n };
  }
  return out;
}

/** How many times better ours is (> 1: ours better), or NaN when either side is missing. */
function ratio(f, ours, theirs) {
  if (!Number.isFinite(ours) || !Number.isFinite(theirs) || ours <= 0 || theirs <= 0) return NaN;
  if (f.key === 'lagP99Ms' && (ours < LAG_FLOOR_MS || theirs < LAG_FLOOR_MS)) return NaN;
  return f.lower ? theirs / ours : ours / theirs;
}

const fmt = (v, digits) => (Number.isFinite(v) ? v.toFixed(digits) : '—');
const fmtRatio = (r) => (Number.isFinite(r) ? `${r >= 100 ? r.toFixed(0) : r.toFixed(2)}x` : '');

function groupsOf(cases) {
  const groups = new Map();
  for (const c of cases) {
    if (!groups.has(c.group)) groups.set(c.group, []);
    groups.get(c.group).push(c);
  }
  return groups;
}

function tokensNote(c) {
  const runs = c.runs ?? [];
  if (runs.length === 0) return '';
  const p = [...new Set(runs.map((r) => r.promptTokens).filter((x) => x !== undefined))].join('/');
  const g = [...new Set(runs.map((r) => r.generated).filter((x) => x !== undefined))].join('/');
  return `${p}+${g}`;
}

// Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom; beyond, the normal one
// with its first correction term (within 0.002 of the exact value).
const T95 = [NaN, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131,
  2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];
function t95(df) {
  if (df < T95.length) return T95[df];
  const z = 1.96;
  return z + (z ** 3 + z) / (4 * df);
}

/**
 * Ours against a contender round by round: the contenders of a case run in turns, so the runs of
 * one round shared the machine's speed of that minute, and their ratio cancels most of its drift.
 * Gives the geometric mean of those ratios and its 95 % confidence interval (t on the logs).
 */
export function pairedRatio(f, mine, theirs) {
  const byRound = (runs) => new Map((runs ?? []).map((r, i) => [r.round ?? i, r[f.key]]));
  const a = byRound(mine), b = byRound(theirs);
  const logs = [];
  for (const [round, x] of a) {
    const r = ratio(f, x, b.get(round));
    if (Number.isFinite(r)) logs.push(Math.log(r));
  }
  const n = logs.length;
  if (n === 0) return { n, mean: NaN, lo: NaN, hi: NaN };
  const m = logs.reduce((s, x) => s + x, 0) / n;
  if (n < 2) return { n, mean: Math.exp(m), lo: NaN, hi: NaN };
  const sd = Math.sqrt(logs.reduce((s, x) => s + (x - m) ** 2, 0) / (n - 1));
  const half = (t95(n - 1) * sd) / Math.sqrt(n);
  return { n, mean: Math.exp(m), lo: Math.exp(m - half), hi: Math.exp(m + half) };
}

/**
 * The pass/fail list of the issue's targets, judged on the paired ratios: pass when the whole
 * 95 % interval clears the target, fail when it lies wholly below, and "unsettled" when the
 * target is inside it (this machine's noise is larger than the margin; more rounds narrow it).
 */
export function targets(results) {
  const out = [];
  const groups = groupsOf(results.cases);
  const gen = results.meta.genTokens ?? 64;
  for (const [group, cs] of groups) {
    const ours = cs.find((c) => c.contender === 'ours' && !c.error);
    if (!ours) continue;
    const fo = figuresOf(ours);
    const vs = (name, key, min, what, mine = ours) => {
      const c = cs.find((x) => x.contender === name && !x.error);
      if (!c) return;
      const f = FIGURES.find((x) => x.key === key);
      const p = pairedRatio(f, mine.runs, c.runs);
      if (!Number.isFinite(p.mean)) return;
      const medians = ratio(f, figuresOf(mine)[key].median, figuresOf(c)[key].median);
      const interval = Number.isFinite(p.lo) ? ` [${p.lo.toFixed(3)}, ${p.hi.toFixed(3)}]` : '';
      const pass = !Number.isFinite(p.lo) ? p.mean >= min : p.lo >= min ? true : p.hi < min ? false : 'unsettled';
      out.push({ group, target: `${what} >= ${min}x ${NAMES[name]}`, value: `${p.mean.toFixed(3)}x${interval} over ${p.n} rounds (medians ${medians.toFixed(2)}x)`, pass });
    };
    const tool = ours.workload === 'text' ? 'llama-bench' : 'mtmd-cli';
    vs(tool, 'decodeTokS', 0.98, 'decode');
    vs(tool, 'prefillTokS', 0.98, 'prefill');
    vs('fugood', 'decodeTokS', 3, 'decode');
    if (ours.workload === 'text') {
      vs('node-llama-cpp', 'decodeTokS', 1.0, 'decode');
      vs('node-llama-cpp', 'prefillTokS', 1.0, 'prefill');
      // Both peers' numbers come from their prebuilt binaries; so does this pair of ours.
      const pre = cs.find((c) => c.contender === 'ours-prebuild' && !c.error);
      if (pre) {
        vs('node-llama-cpp', 'decodeTokS', 1.0, 'prebuild decode', pre);
        vs('node-llama-cpp', 'prefillTokS', 1.0, 'prebuild prefill', pre);
      }
    }
    const worstLag = fo.lagP99Ms.worst;
    if (Number.isFinite(worstLag)) out.push({ group, target: 'event loop lag p99 < 5 ms (worst run)', value: `${worstLag.toFixed(2)} ms`, pass: worstLag < 5 });
    const b = ours.buffers;
    if (b && Number.isFinite(b.total) && Number.isFinite(ours.peakRssMiB)) {
      const r = ours.peakRssMiB / b.total;
      out.push({ group, target: 'peak RSS <= 1.1x weights + KV + compute', value: `${r.toFixed(2)}x (${ours.peakRssMiB.toFixed(0)} / ${b.total.toFixed(0)} MiB)`, pass: r <= 1.1 });
    }
    for (const c of cs.filter((x) => !x.error && x.contender !== 'torch')) {
      const short = (c.runs ?? []).filter((r) => r.generated !== gen);
      // Not a target of ours: a contender that stops short is named so its rates can be read
      // knowing that (they are per generated token, so still comparable).
      if (short.length) out.push({ group, target: `${NAMES[c.contender]} generated ${gen} tokens`, value: `no: ${short.map((r) => r.generated).join(',')}`, pass: null });
    }
  }
  return out;
}

function pad(s, n) {
  s = String(s);
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function textTable(results) {
  const lines = [];
  const widths = [20, ...FIGURES.map(() => 19), 9];
  const row = (cells) => cells.map((c, i) => pad(c, widths[i])).join(' ').trimEnd();
  for (const [group, cs] of groupsOf(results.cases)) {
    const ours = cs.find((c) => c.contender === 'ours' && !c.error);
    const fo = ours ? figuresOf(ours) : null;
    lines.push('', `${group}`, row(['contender', ...FIGURES.map((f) => f.label), 'tokens']));
    for (const c of cs) {
      if (c.error) {
        lines.push(row([NAMES[c.contender], `failed: ${c.error.split('\n')[0].slice(0, 100)}`]));
        continue;
      }
      const f = figuresOf(c);
      lines.push(row([NAMES[c.contender], ...FIGURES.map((x) => {
        const v = fmt(f[x.key].median, x.digits);
        if (c.contender === 'ours' || !fo) return v;
        const r = fmtRatio(ratio(x, fo[x.key].median, f[x.key].median));
        return r ? `${v} (${r})` : v;
      }), tokensNote(c)]));
    }
  }
  return lines.join('\n');
}

const VERDICT_TEXT = { true: 'PASS', false: 'FAIL', unsettled: 'UNSETTLED', null: 'NOTE' };
const VERDICT_MD = { true: 'pass', false: '**FAIL**', unsettled: 'unsettled', null: 'note' };

function targetLines(list) {
  return list.map((t) => `${pad(VERDICT_TEXT[String(t.pass)], 9)} ${pad(t.group, 18)} ${pad(t.target, 44)} ${t.value}`).join('\n');
}

function growthText(g) {
  const lines = [];
  if (g?.prompt?.length) {
    lines.push('', `Prompt length (${g.prompt[0].quant}, text; ours vs llama-bench)`, 'prompt  ours prefill tok/s  llama-bench  ours TTFT ms  ours decode tok/s  llama-bench decode');
    for (const r of g.prompt) {
      const o = r.ours?.error ? null : figuresOf(r.ours ?? {});
      const l = r.llamaBench && !r.llamaBench.error ? figuresOf(r.llamaBench) : null;
      lines.push(`${pad(r.promptTokens, 7)} ${pad(fmt(o?.prefillTokS.median, 1), 18)} ${pad(fmt(l?.prefillTokS.median, 1), 12)} ${pad(fmt(o?.ttftMs.median, 0), 13)} ${pad(fmt(o?.decodeTokS.median, 2), 18)} ${fmt(l?.decodeTokS.median, 2)}`);
    }
  }
  if (g?.images?.length) {
    lines.push('', `Images per prompt (${g.images[0].quant}, CLIP ViT-B/16: 196 tokens each)`, 'images  encode ms  prompt tokens  prefill tok/s  TTFT ms  decode tok/s  peak RSS MiB');
    for (const r of g.images) {
      const o = r.ours?.error ? null : figuresOf(r.ours ?? {});
      lines.push(`${pad(r.images, 7)} ${pad(fmt(o?.encodeMs.median, 0), 10)} ${pad(r.ours?.runs?.[0]?.promptTokens ?? '—', 14)} ${pad(fmt(o?.prefillTokS.median, 1), 14)} ${pad(fmt(o?.ttftMs.median, 0), 8)} ${pad(fmt(o?.decodeTokS.median, 2), 13)} ${fmt(r.ours?.peakRssMiB, 0)}`);
    }
  }
  return lines.join('\n');
}

function loadText(load) {
  if (!load || load.error) return load?.error ? `\nLoad times: failed: ${load.error}` : '';
  const c = summary(load.cold), w = summary(load.warm);
  const res = Math.max(...load.residentBeforeCold);
  return `\nLoad (${load.quant} + CLIP projector, loadModel to resolved): cold min ${fmt(c.min, 0)} / median ${fmt(c.median, 0)} ms` +
    ` (resident before: ${fmt(res / 2 ** 20, 1)} MiB); warm min ${fmt(w.min, 0)} / median ${fmt(w.median, 0)} ms`;
}

function header(meta) {
  return `minigpt-node bench: ${meta.date}, ${meta.cpu} (${meta.cores} CPUs, ${meta.memGiB.toFixed(0)} GiB), node ${meta.node}, llama.cpp ${String(meta.llamaCommit).slice(0, 7)}\n` +
    `${meta.threads} threads, greedy, median of ${meta.runs} runs (contenders take turns run by run, each run after a warm-up); load average at start ${meta.loadAvgStart.map((x) => x.toFixed(2)).join(' ')}, highest seen ${meta.loadAvgMax.toFixed(2)}\n` +
    'Cells: median (how many times better ours is: >1 ours better, for rates ours/theirs, for ms and MiB theirs/ours); tokens: prompt+generated per run';
}

/** { text, markdown, svg } of one run. */
export function render(results) {
  const t = targets(results);
  const text = `${header(results.meta)}\n${textTable(results)}\n${growthText(results.growth)}\n${loadText(results.load)}\n\nTargets\n${targetLines(t)}\n`;
  return { text, markdown: markdown(results, t), svg: svg(results) };
}

// ---- markdown ----

function mdTable(results) {
  const out = [];
  for (const [group, cs] of groupsOf(results.cases)) {
    const ours = cs.find((c) => c.contender === 'ours' && !c.error);
    const fo = ours ? figuresOf(ours) : null;
    out.push(`### ${group}`, '', `| contender | ${FIGURES.map((f) => f.label).join(' | ')} | tokens |`, `|---|${FIGURES.map(() => '---:').join('|')}|---|`);
    for (const c of cs) {
      if (c.error) {
        out.push(`| ${NAMES[c.contender]} | failed: ${c.error.split('\n')[0].replace(/\|/g, '/').slice(0, 160)} |${FIGURES.map(() => '').join('|')}|`);
        continue;
      }
      const f = figuresOf(c);
      const cells = FIGURES.map((x) => {
        const v = fmt(f[x.key].median, x.digits);
        const best = x.perProcess ? '' : ` [${fmt(f[x.key].best, x.digits)}]`;
        if (v === '—') return v;
        if (c.contender === 'ours' || !fo) return `**${v}**${best}`;
        const r = fmtRatio(ratio(x, fo[x.key].median, f[x.key].median));
        return `${v}${best}${r ? ` (${r})` : ''}`;
      });
      out.push(`| ${NAMES[c.contender]} | ${cells.join(' | ')} | ${tokensNote(c)} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

function mdGrowth(g) {
  const out = [];
  if (g?.prompt?.length) {
    out.push(`### Prompt length (${g.prompt[0].quant}, text only, context 4096)`, '',
      '| prompt tokens | ours prefill tok/s | llama-bench prefill tok/s | ours TTFT ms | ours decode tok/s | llama-bench decode tok/s (same depth) |', '|---:|---:|---:|---:|---:|---:|');
    for (const r of g.prompt) {
      const o = r.ours && !r.ours.error ? figuresOf(r.ours) : null;
      const l = r.llamaBench && !r.llamaBench.error ? figuresOf(r.llamaBench) : null;
      out.push(`| ${r.promptTokens} | ${fmt(o?.prefillTokS.median, 1)} | ${fmt(l?.prefillTokS.median, 1)} | ${fmt(o?.ttftMs.median, 0)} | ${fmt(o?.decodeTokS.median, 2)} | ${fmt(l?.decodeTokS.median, 2)} |`);
    }
    out.push('');
  }
  if (g?.images?.length) {
    out.push(`### Images per prompt (${g.images[0].quant}, CLIP ViT-B/16 224 px: 196 tokens each, plus the same text)`, '',
      '| images | encode ms (all) | prompt tokens | prefill tok/s | TTFT ms | decode tok/s | peak RSS MiB |', '|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of g.images) {
      const o = r.ours && !r.ours.error ? figuresOf(r.ours) : null;
      out.push(`| ${r.images} | ${fmt(o?.encodeMs.median, 0)} | ${r.ours?.runs?.[0]?.promptTokens ?? '—'} | ${fmt(o?.prefillTokS.median, 1)} | ${fmt(o?.ttftMs.median, 0)} | ${fmt(o?.decodeTokS.median, 2)} | ${fmt(r.ours?.peakRssMiB, 0)} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

// Pairs that do not involve the local build of ours, paired by round like the targets.
const OTHER_PAIRS = [['ours-prebuild', 'ours'], ['ours-prebuild', 'llama-bench'], ['llama-bench', 'node-llama-cpp'], ['ours-prebuild', 'node-llama-cpp']];

function mdOtherPairs(results) {
  const rows = [];
  const cell = (p) => (Number.isFinite(p.lo) ? `${p.mean.toFixed(3)}x [${p.lo.toFixed(3)}, ${p.hi.toFixed(3)}]` : '—');
  for (const [group, cs] of groupsOf(results.cases)) {
    for (const [a, b] of OTHER_PAIRS) {
      const ca = cs.find((c) => c.contender === a && !c.error), cb = cs.find((c) => c.contender === b && !c.error);
      if (!ca || !cb) continue;
      const [prefill, decode] = ['prefillTokS', 'decodeTokS'].map((key) => pairedRatio(FIGURES.find((f) => f.key === key), ca.runs, cb.runs));
      rows.push(`| ${group} | ${NAMES[a]} / ${NAMES[b]} | ${cell(prefill)} | ${cell(decode)} | ${prefill.n} |`);
    }
  }
  if (!rows.length) return '';
  return '### Other pairs\n\nThe same paired ratios (geometric mean [95 % interval]) between contenders other than the local build of ours.\n\n' +
    '| case | pair | prefill | decode | rounds |\n|---|---|---:|---:|---:|\n' + rows.join('\n') + '\n';
}

function mdLoad(load) {
  if (!load) return '';
  if (load.error) return `### Load time\n\nfailed: ${load.error}\n`;
  const c = summary(load.cold), w = summary(load.warm);
  return `### Load time (${load.quant} LLM + CLIP projector, \`loadModel()\` until it resolves, ${load.cold.length} pairs)\n\n` +
    '| | min ms | median ms |\n|---|---:|---:|\n' +
    `| cold (files evicted from the page cache; resident before: ${fmt(Math.max(...load.residentBeforeCold) / 2 ** 20, 1)} MiB) | ${fmt(c.min, 0)} | ${fmt(c.median, 0)} |\n` +
    `| warm (all pages cached, mmap) | ${fmt(w.min, 0)} | ${fmt(w.median, 0)} |\n`;
}

function mdBuffers(results) {
  const rows = results.cases.filter((c) => c.contender === 'ours' && c.buffers && Number.isFinite(c.buffers.total));
  if (!rows.length) return '';
  return '| case | weights (mapped + repacked + projector) | KV | compute + output | sum | peak RSS | RSS / sum |\n|---|---:|---:|---:|---:|---:|---:|\n' +
    rows.map((c) => `| ${c.group} | ${fmt(c.buffers.weights, 0)} | ${fmt(c.buffers.kv, 0)} | ${fmt(c.buffers.compute + c.buffers.output, 0)} | ${fmt(c.buffers.total, 0)} | ${fmt(c.peakRssMiB, 0)} | ${fmt(c.peakRssMiB / c.buffers.total, 2)}x |`).join('\n') + '\n';
}

function markdown(results, t) {
  const m = results.meta;
  const loaded = m.loadAvgMax > m.threads + 0.75 || m.loadAvgStart[0] > 1.0;  // the bench itself keeps it near `threads`
  const files = Object.entries(results.files ?? {}).map(([k, v]) => `${k} ${v.toFixed(0)} MiB`).join(', ');
  return `# Benchmarks

Made by \`npm run bench -- --write-docs\` (or \`BENCH_WRITE_DOCS=1 npm run bench\`) in one run, which also
drew [benchmarks.svg](benchmarks.svg). Random weights of real shapes, written by our GGUF writer and
quantized by llama.cpp's own \`llama-quantize\` from the same source: a TinyLlama-1.1B-shaped LLaMA
(22 layers, n_embd 2048, n_ff 5632, 32 heads, 4 KV heads, vocabulary 32000), a CLIP ViT-B/16 "mlp"
projector at 224 px (196 image tokens) and the EVA ViT-g/14 + Q-Former BLIP-2 projector (32 image
tokens). Files: ${files}.

${m.date}; ${m.cpu}, ${m.cores} CPUs, ${m.memGiB.toFixed(0)} GiB; Node ${m.node}; llama.cpp ${String(m.llamaCommit).slice(0, 7)} (ours and
llama.cpp's tools), @fugood/llama.node ${m.peers?.fugood}, node-llama-cpp ${m.peers?.nodeLlamaCpp}.
${loaded ? `\n**The machine was loaded during this run** (load average ${m.loadAvgStart.map((x) => x.toFixed(2)).join(' / ')} at the start, up to ${m.loadAvgMax.toFixed(2)} while it ran, on ${m.cores} CPUs, more than the bench's own ${m.threads} threads): absolute numbers are lower and noisier than on an idle machine, and ratios between contenders measured minutes apart carry that noise too.\n` : ''}
![prefill and decode rates](benchmarks.svg)

## Workload

The same for every contender: ${m.threads} threads, greedy, a ${m.promptTokens}-token prompt (words that are one token
each, so every tokenizer gives the same count; BOS first), ${m.genTokens} generated tokens; the image cases put
one 224x224 PNG into a ChatML turn (the model's template). Each measured run is a child process
of its own that loads the model, does a warm-up of the same work (as llama-bench does; a short one
for @fugood/llama.node, which is too slow for more) and then the run; llama-bench evaluates as many prompt tokens as the bindings do (BOS + prompt: with the repacked
Q4_0 kernels, which take rows four at a time, pp129 is ~3 % slower per token than pp128). The contenders of a case
take turns run by run, the order rotating (A B C, B C A, ...), ${m.runs} runs each (@fugood/llama.node 3), so the few percent a shared machine's
speed drifts over minutes falls on all of them alike. Each run starts with a different word, so no
binding can reuse the previous run's context. Cells give the median, the best run in
brackets, and in parentheses how many times better ours is (above 1: ours is better; rates are
ours/theirs, milliseconds and MiB theirs/ours).

- **encode ms**: picture to embeddings (ours: \`model.encodeImage(path)\`, PNG decode included;
  llama.cpp: libmtmd's own log line).
- **TTFT**: encode plus prefill until the first token reaches the caller (llama-bench: its pp time).
- **prefill tok/s**: prompt tokens evaluated (image tokens included) / (first token time − encode);
  for the Node bindings timed in JS from the request to the first token, for llama.cpp's tools from
  their own counters (pure evaluation, no sampling, no JS).
- **decode tok/s**: (generated − 1) / (last token − first token), in JS for the bindings; llama-bench
  tg${m.genTokens} at the depth our decode runs at (${m.promptTokens + 1}), llama-mtmd-cli's eval counter.
- **peak RSS**: the process's VmHWM at its end (/usr/bin/time for the native tools); mapped model
  pages count.
- **loop lag p99**: \`perf_hooks.monitorEventLoopDelay\` (1 ms resolution, the interval subtracted)
  while generating, in one more run of the same work after the timed ones: its timer wakes the JS
  thread a thousand times a second, which on 2 cores takes time from the compute threads, so the
  rates come from runs without it (for ours and node-llama-cpp; @fugood/llama.node's runs are
  timed with it on).
- **JS CPU ms/token**: the JS thread's CPU time (Linux's per-thread accounting,
  \`/proc/self/task/<pid>/schedstat\`) from the first token to the stream's end, per decoded token:
  what handing the tokens to JS costs the thread an app runs everything else on. Where every core
  computes, it comes out of decode too (see Notes). Not for @fugood/llama.node, whose timed runs
  carry the lag monitor's thousand wake-ups a second.
- Every run's token counts are printed (prompt+generated) and checked: greedy decoding of these
  weights never picks EOS (its output row is zero), and every contender must give ${m.genTokens}.

## Results

${mdTable(results)}
## Targets

Each ratio against a contender is the geometric mean of the ratios of the runs that shared a
round, with its 95 % confidence interval in brackets (Student's t on the logs of the ratios), and
the ratio of the medians beside it. A target passes when the whole interval clears it, fails when
the whole interval is below it, and is *unsettled* when it lies inside: a shared or virtual
machine's speed drifts by several percent from minute to minute, more than the 2 % some targets
leave, and only more rounds (\`--runs\`) narrow the interval.

| case | target | value | |
|---|---|---|---|
${t.map((x) => `| ${x.group} | ${x.target} | ${x.value} | ${VERDICT_MD[String(x.pass)]} |`).join('\n')}

${mdOtherPairs(results)}
Memory, from llama.cpp's and libmtmd's own log lines (MiB; "weights" counts the mapped file and
the copy llama.cpp repacks for its AVX kernels, which both stay resident):

${mdBuffers(results)}
## Growth

${mdGrowth(results.growth)}
${mdLoad(results.load)}
${NOTES}`;
}

// Prose that does not change from run to run; the numbers it refers to are in the tables above.
const NOTES = `## Notes

- The peers are what \`npm install\` gives: @fugood/llama.node's linux-x64 CPU binary is built for
  baseline x86-64 (objdump finds no AVX/ymm instructions in it), so its matrix products run on SSE
  only; node-llama-cpp ships one CPU library per micro-architecture and picks the best at run time.
  Ours and llama.cpp's tools are built from the same source with \`GGML_NATIVE=ON\` and ggml's own
  thread pool (\`GGML_OPENMP=OFF\`); on x86 the CPU code is tuned generically (\`-mtune=generic\`
  beside \`-march=native\`), like the prebuilt variants.
- Found and fixed with this benchmark: \`-march=native\` also tunes for the CPU, and Debian's GCC 12
  tunes this Zen 4 EPYC as Zen 3; its code for the repacked Q4_0 matmul shuttles values between
  general and vector registers (85 \`vmovq\` in the kernel against 9), and the local build's prefill
  was 3.4 % behind the same build tuned generically ([1.9 %, 5.0 %], 10 alternating rounds) and
  2-4 % behind the prebuild and node-llama-cpp. \`perf record\` showed the same kernels in all three;
  only their compiled code differed.
- Found and fixed with this benchmark: with OpenMP, the libuv thread that encodes an image kept an
  OpenMP team of its own, which competed with the generation thread's team for the two cores, and
  every later decode in the process ran 30% slower (TinyLlama Q4_0 at depth 338: 31 tok/s after one
  image, 45 before; llama-mtmd-cli, one thread for both, 42). Every build now uses ggml's thread
  pool, one per context, attached with \`llama_attach_threadpool\` (41 tok/s after an image).
- llama-bench is the ceiling for a binding: no tokenizer, no sampler beyond the graph, no JS. Our
  prefill and decode are timed in JS around the public API, so they include tokenizing, the chat
  template (image cases), sampling, moving each token across threads and the async iterator.
  Measured with timers in the decode loop (a one-off build, not the shipped code; TinyLlama Q4_0,
  2 threads, 16.3 ms steps): \`llama_decode\` itself takes as long in our process as in
  llama-bench's (16.2-16.6 ms a step in both); what a step adds around it is the sampling (0.04 ms
  through llama.cpp's sampler chain, which copies all 32,000 logits into a candidate array for a
  greedy pick; greedy now takes the argmax of the logits row directly) and 0.12-0.15 ms from the end
  of sampling to the next \`llama_decode\`. That last part is the JS thread: woken for each token
  (Node-API's thread-safe function, its only way to wake JS from another thread), it takes the core
  the loop thread runs on, since both cores are computing; woken once per 16 tokens instead, the
  gap is 0.01 ms. The JS thread's own CPU time per token is the "JS CPU ms/token" column, about the
  same 0.12 ms: on a machine whose every core computes, handing each token to JS as it comes costs
  about 0.8 % of a step, and a stream must do that.
- The \`minigpt-node prebuild\` row (there when \`npm run prebuild\` has made one for this version) is
  the addon \`npm install\` gives users: ggml's CPU variants, here its zen4 library, the way
  node-llama-cpp ships them. The \`minigpt-node\` row is the local build (\`-march=native\`, like
  llama.cpp's tools here). "Other pairs" above compares the two, and the prebuild with llama-bench.
- node-llama-cpp's binaries are built from the same llama.cpp source as ours (its git bundle is
  where our source comes from; it adds one model-loader patch) by its own toolchain (GCC 11.4 on
  Ubuntu 22.04, ggml's CPU variants). No binding evaluates a prompt faster than the llama.cpp
  inside it, so "Other pairs" also gives llama-bench against node-llama-cpp: the part of a gap to
  node-llama-cpp that is not the binding's.
- Prompt sizes are matched token for token: the bindings evaluate BOS + 128 prompt tokens, so
  llama-bench runs pp129. It matters beyond the 1/128: the repacked Q4_0 kernels take four rows at
  a time, so the 129th row goes through the one-row path, and llama-bench's own pp129 is about 3 %
  slower per token than its pp128 here (an earlier version of this bench compared our 129 against
  its 128 and reported a 5 % prefill gap that was not there).
- "Cold" load: the model and projector files are evicted from the page cache with
  \`posix_fadvise(POSIX_FADV_DONTNEED)\` (GNU \`dd iflag=nocache\`, no root needed, no other file
  touched) and \`fincore\` checks that nothing of them stays resident. On a virtual machine the host
  may still cache the disk image, so this is "not in this kernel's page cache". "Warm" is the same
  load right after. With mmap, loading maps the file; pages are read when first used (the
  first prompt), except for the tensors llama.cpp repacks at load, which are read and copied then.
- The BLIP-2 row of PyTorch is the reference implementation (float32, Debian's python3-torch) timed
  at ViT depths 1 and 3 and extrapolated to 39; a record, not a speed anchor. See also
  [benchmarks-qformer.md](benchmarks-qformer.md) for FLOP rates.
`;

// ---- SVG ----

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Horizontal bars: for each case, prefill and decode tok/s of every contender, side by side. */
export function svg(results) {
  const groups = [...groupsOf(results.cases)].filter(([, cs]) => cs.some((c) => !c.error && (c.runs ?? []).some((r) => Number.isFinite(r.decodeTokS))));
  const panels = [{ key: 'prefillTokS', title: 'prefill tok/s (higher is better)' }, { key: 'decodeTokS', title: 'decode tok/s (higher is better)' }];
  const labelW = 170, panelW = 330, gap = 40, barH = 16, rowGap = 4, groupGap = 26, top = 54;
  const width = labelW + panels.length * panelW + (panels.length - 1) * gap + 20;
  const max = {};
  for (const p of panels) {
    max[p.key] = Math.max(1e-9, ...groups.flatMap(([, cs]) => cs.filter((c) => !c.error).map((c) => figuresOf(c)[p.key].median).filter(Number.isFinite)));
  }
  const parts = [];
  let y = top;
  for (const [group, cs] of groups) {
    parts.push(`<text x="10" y="${y + 12}" class="g">${esc(group)}</text>`);
    y += 20;
    for (const c of cs.filter((x) => !x.error)) {
      const f = figuresOf(c);
      if (!Number.isFinite(f.decodeTokS.median) && !Number.isFinite(f.prefillTokS.median)) continue;
      parts.push(`<text x="${labelW - 8}" y="${y + barH - 4}" class="l" text-anchor="end">${esc(NAMES[c.contender])}</text>`);
      panels.forEach((p, i) => {
        const x0 = labelW + i * (panelW + gap);
        const v = f[p.key].median;
        if (!Number.isFinite(v)) return;
        const w = Math.max(1, (v / max[p.key]) * (panelW - 70));
        parts.push(`<rect x="${x0}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${COLORS[c.contender] ?? '#999'}"/>`);
        parts.push(`<text x="${(x0 + w + 4).toFixed(1)}" y="${y + barH - 4}" class="v">${fmt(v, p.key === 'decodeTokS' ? 2 : 1)}</text>`);
      });
      y += barH + rowGap;
    }
    y += groupGap - rowGap;
  }
  const height = y + 10;
  const heads = panels.map((p, i) => `<text x="${labelW + i * (panelW + gap)}" y="${top - 10}" class="h">${esc(p.title)}</text>`).join('');
  const m = results.meta;
  const title = `minigpt-node vs llama.cpp's tools and Node peers: TinyLlama-1.1B shape, ${m.threads} threads, median of ${m.runs} runs`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif">
<style>.t{font-size:14px;font-weight:600}.h{font-size:12px;font-weight:600}.g{font-size:12px;font-weight:600;fill:#24292f}.l{font-size:11px;fill:#24292f}.v{font-size:10px;fill:#57606a}</style>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="20" class="t">${esc(title)}</text>
${heads}
${parts.join('\n')}
</svg>
`;
}
