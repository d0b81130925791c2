// A short fuzz run inside `npm test`: every regression recipe (inputs that once crashed the
// process) is replayed, then a few dozen fresh mutations per kind. Each input is loaded in a
// child process; a crash, a hang or an error that is not a MinigptError fails the test.
// The long run is `npm run fuzz -- --seed N` (scripts/fuzz.mjs).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KINDS, writeCorpus } from '../../tools/fuzz/corpus.js';
import { ggufLayout } from '../../tools/fuzz/gguf-layout.js';
import { generatedRecipes, runFuzz } from '../../tools/fuzz/run.js';

const PER_KIND = 60;
const SEED = Number(process.env.MINIGPT_FUZZ_SEED ?? 20240601);

let dir, corpus;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-fuzz-short-'));
  corpus = await writeCorpus(join(dir, 'corpus'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const describe = (f) => `${f.recipe.kind} ${JSON.stringify(f.recipe.ops).slice(0, 300)}: ${f.outcome} ${f.signal ?? f.exitCode ?? ''} ${(f.message ?? f.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`;

async function regressions() {
  return JSON.parse(await readFile(new URL('../../tools/fuzz/regressions.json', import.meta.url), 'utf8'));
}

test('regression recipes still aim at the header fields they were found on', async () => {
  // The recipes are byte offsets into the corpus; if the fixture writers change, they would
  // silently test something else. Each edit names its field, so check it is still there.
  for (const { recipe } of await regressions()) {
    const bytes = corpus.bases[recipe.base];
    const { fields } = ggufLayout(bytes);
    const stale = (op) => `${recipe.kind} recipe ${JSON.stringify(op)}: the corpus changed; find the field again and update tools/fuzz/regressions.json`;
    for (const op of recipe.ops.filter((o) => o.field)) {
      // "value KEY": the bytes of a string value, right after its length field.
      const f = op.field.startsWith('value ') ? fields.find((g) => g.at + 8 === op.at && g.kind === 'string-length') : fields.find((g) => g.at === op.at);
      const label = f && (op.field.startsWith('string ') || op.field.startsWith('value ') ? `${op.field.split(' ')[0]} ${f.key}` : `${f.kind} ${f.key ?? ''}`.trim());
      assert.equal(label, op.field, stale(op));
    }
    for (const op of recipe.ops.filter((o) => o.op === 'string-element')) {
      const f = fields.filter((g) => g.kind === 'element-length' && g.key === op.key)[op.index];
      assert.equal(f && bytes.toString('utf8', f.at + 8, f.at + 8 + Number(f.value)), op.was, stale(op));
    }
  }
});

test('inputs that once crashed now fail with typed errors', async () => {
  const list = await regressions();
  const { failures } = await runFuzz({ corpus, recipes: list.map((r) => r.recipe), workDir: join(dir, 'replay'), timeoutMs: 60_000 });
  assert.deepEqual(failures.map(describe), []);
});

test(`${PER_KIND} mutated inputs of each kind end in success or a typed error (seed ${SEED})`, async () => {
  const recipes = generatedRecipes(corpus, Object.keys(KINDS), SEED, PER_KIND);
  const { perKind, failures } = await runFuzz({ corpus, recipes, workDir: join(dir, 'fresh'), timeoutMs: 60_000 });
  assert.deepEqual(failures.map(describe), [], `reproduce with: npm run fuzz -- --seed ${SEED} --count ${PER_KIND}`);
  for (const kind of Object.keys(KINDS)) assert.equal(perKind[kind].cases, PER_KIND);
});
