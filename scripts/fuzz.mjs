#!/usr/bin/env node
// npm run fuzz -- [--seed N] [--count N] [--kinds llm,mmproj,blip2,image] [--strategy NAME] [--timeout S] [--save DIR] [--replay]
// Mutates the tiny test models and pictures (bit flips, truncation, splices, GGUF header-field
// edits, vocabulary edits: tokens renamed into twins of others behind NULs, emptied, retyped),
// `--strategy vocab` (or field, string, flip, ...) uses only that kind of mutation, loads each through the public API in a child process and reports every input that
// crashed the process, hung, or failed with an error that is not a MinigptError. A failing
// input's recipe (a few lines of JSON) goes into tools/fuzz/regressions.json by hand, where
// the short fuzz test in `npm test` replays it.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { KINDS, writeCorpus } from '../tools/fuzz/corpus.js';
import { generatedRecipes, runFuzz } from '../tools/fuzz/run.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    count: { type: 'string', default: '1000' },
    kinds: { type: 'string', default: Object.keys(KINDS).join(',') },
    timeout: { type: 'string', default: '60' },
    save: { type: 'string' },
    strategy: { type: 'string' },
    replay: { type: 'boolean', default: false },
  },
});
const seed = Number(values.seed);
const count = Number(values.count);
const kinds = values.kinds.split(',');
for (const k of kinds) if (!KINDS[k]) throw new Error(`unknown kind ${k}; known: ${Object.keys(KINDS).join(', ')}`);
if (!Number.isInteger(seed) || !Number.isInteger(count) || count < 0) throw new Error('--seed and --count take integers');

const dir = await mkdtemp(join(tmpdir(), 'minigpt-fuzz-'));
try {
  const corpus = await writeCorpus(join(dir, 'corpus'));
  const recipes = values.replay
    ? JSON.parse(await readFile(new URL('../tools/fuzz/regressions.json', import.meta.url), 'utf8')).map((r) => r.recipe)
    : generatedRecipes(corpus, kinds, seed, count, values.strategy);
  console.log(values.replay ? `replaying ${recipes.length} regression cases` : `seed ${seed}: ${count} inputs per kind (${kinds.join(', ')})${values.strategy ? `, strategy ${values.strategy}` : ''}`);
  const started = performance.now();
  let done = 0;
  const { perKind, failures } = await runFuzz({
    corpus,
    recipes,
    workDir: join(dir, 'work'),
    timeoutMs: Number(values.timeout) * 1000,
    saveDir: values.save,
    onCase: (recipe, result) => {
      if (++done % 250 === 0) console.log(`  ${done}/${recipes.length}`);
      if (!['ok', 'typed'].includes(result.outcome)) {
        console.log(`FAIL ${result.outcome} ${result.signal ?? result.exitCode ?? ''} ${JSON.stringify(recipe)}`);
        console.log(`  ${(result.message ?? result.stderr ?? '').trim().split('\n').slice(-6).join('\n  ')}`);
      }
    },
  });
  for (const [kind, c] of Object.entries(perKind)) {
    const typed = Object.entries(c.typed).map(([code, n]) => `${code} ${n}`).join(', ');
    console.log(`${kind}: ${c.cases} inputs, ${c.ok} loaded and ran, ${c.failures} failures; typed errors: ${typed || 'none'}`);
  }
  console.log(`${failures.length} crashes/hangs/untyped errors in ${((performance.now() - started) / 1000).toFixed(1)} s (seed ${seed})`);
  process.exitCode = failures.length ? 1 : 0;
} finally {
  await rm(dir, { recursive: true, force: true });
}
