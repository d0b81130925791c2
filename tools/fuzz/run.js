// Runs fuzz cases through a child process (tools/fuzz/worker.js), many per child for speed,
// one in flight at a time so that a crash is blamed on exactly the input that caused it; after
// a crash or a hang the child is replaced and the run goes on with the next input.

import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { applyRecipe, makeRecipe } from './mutate.js';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'worker.js');
const PREFIX = '@@fuzz ';
const STDERR_TAIL = 4000;

/** One child process running cases one at a time. */
class FuzzChild {
  #proc;
  #pending;
  #stderr = '';
  #exited;

  constructor(config) {
    this.#proc = spawn(process.execPath, [WORKER, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#proc.stderr.setEncoding('utf8');
    this.#proc.stderr.on('data', (s) => (this.#stderr = (this.#stderr + s).slice(-STDERR_TAIL)));
    this.#proc.stdin.on('error', () => {}); // writing to a child that just died
    this.ready = new Promise((resolve, reject) => {
      this.#pending = (m) => (m.ready ? resolve() : reject(new Error(`fuzz worker failed to start: ${JSON.stringify(m)}`)));
    });
    createInterface({ input: this.#proc.stdout }).on('line', (line) => {
      if (!line.startsWith(PREFIX)) return;
      const pending = this.#pending;
      this.#pending = undefined;
      pending?.(JSON.parse(line.slice(PREFIX.length)));
    });
    this.#exited = new Promise((resolve) =>
      this.#proc.on('exit', (exitCode, signal) => {
        const pending = this.#pending;
        this.#pending = undefined;
        pending?.({ outcome: 'crash', exitCode, signal, stderr: this.#stderr });
        resolve();
      }),
    );
  }

  /** Runs one case; resolves with `{ outcome: 'ok' | 'typed' | 'untyped' | 'crash' | 'hang', ... }`. */
  run(id, kind, file, timeoutMs) {
    this.#stderr = '';
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending = undefined;
        this.#proc.kill('SIGKILL');
        resolve({ outcome: 'hang', stderr: this.#stderr });
      }, timeoutMs);
      this.#pending = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      this.#proc.stdin.write(JSON.stringify({ id, kind, file }) + '\n');
    });
  }

  async close() {
    this.#proc.stdin.end();
    const timer = setTimeout(() => this.#proc.kill('SIGKILL'), 10_000);
    await this.#exited;
    clearTimeout(timer);
  }

  get alive() {
    return this.#proc.exitCode === null && this.#proc.signalCode === null;
  }
}

/** Cases `0..count-1` of each kind, generated from `seed`; `strategy` forces one mutation strategy. */
export function generatedRecipes(corpus, kinds, seed, count, strategy) {
  const out = [];
  for (const kind of kinds) for (let i = 0; i < count; i++) out.push({ ...makeRecipe(corpus, kind, seed, i, strategy), seed, index: i });
  return out;
}

/**
 * Runs `recipes` against `corpus` (from writeCorpus). Returns per-kind counts and the
 * failures: `{ recipe, outcome, signal?, exitCode?, message?, stderr? }` for every case that
 * crashed, hung or ended in an error that is not a MinigptError.
 * `saveDir`: where to write each failing input and its recipe. `onCase(recipe, result)` sees every case.
 */
export async function runFuzz({ corpus, recipes, workDir, timeoutMs = 30_000, saveDir, onCase }) {
  await mkdir(workDir, { recursive: true });
  const config = { llm: corpus.paths.llm, mmproj: corpus.paths.mmproj, blip2: corpus.paths.blip2, png: corpus.paths.png };
  const perKind = {};
  const failures = [];
  let child;
  try {
    for (const [id, recipe] of recipes.entries()) {
      if (!child?.alive) {
        child = new FuzzChild(config);
        await child.ready;
      }
      const file = join(workDir, `case-${recipe.kind}`);
      const bytes = applyRecipe(recipe, corpus.bases);
      await writeFile(file, bytes);
      const result = await child.run(id, recipe.kind, file, timeoutMs);
      const counts = (perKind[recipe.kind] ??= { cases: 0, ok: 0, typed: {}, failures: 0 });
      counts.cases++;
      if (result.outcome === 'ok') counts.ok++;
      else if (result.outcome === 'typed') counts.typed[result.code] = (counts.typed[result.code] ?? 0) + 1;
      else {
        counts.failures++;
        failures.push({ recipe, ...result });
        if (saveDir) {
          await mkdir(saveDir, { recursive: true });
          const name = `${recipe.kind}-${recipe.seed ?? 'r'}-${recipe.index ?? failures.length}`;
          await writeFile(join(saveDir, `${name}.bin`), bytes);
          await writeFile(join(saveDir, `${name}.json`), JSON.stringify({ recipe, ...result }, null, 2));
        }
      }
      onCase?.(recipe, result);
    }
  } finally {
    await child?.close();
  }
  return { perKind, failures };
}
