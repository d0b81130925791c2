// Contender: llama.cpp's own llama-bench, built from the same source as our addon: the ceiling
// for prefill and decode of any binding. Text only (it evaluates random token ids).
// Prefill is pp<promptTokens + 1> from an empty context: the BOS token and the prompt, as many
// tokens as the bindings evaluate (the count matters beyond its share: the repacked Q4_0 matmul
// takes rows four at a time, and a 129th row goes through the one-row path, ~3 % of pp128).
// Decode is tg<genTokens> after those same tokens, where our decode runs too.
import { join } from 'node:path';
import { oracles } from '../models.mjs';
import { runTool } from '../spawn.mjs';

const TOOL = join(oracles, 'llama-bench');

async function bench(s, args) {
  const common = ['-m', s.model, '-t', String(s.threads), '-r', String(s.runs), '-o', 'json', '-ngl', '0'];
  const r = await runTool(TOOL, [...common, ...args]);
  const [test] = JSON.parse(r.stdout);
  return { samplesNs: test.samples_ns, peakRssMiB: r.peakRssMiB };
}

/** Settings: model, promptTokens, genTokens, runs, threads. */
export async function run(s) {
  const promptTokens = s.promptTokens + 1;
  const pp = await bench(s, ['-p', String(promptTokens), '-n', '0']);
  const tg = await bench(s, ['-p', '0', '-n', String(s.genTokens), '-d', String(promptTokens)]);
  const runs = pp.samplesNs.map((ppNs, i) => ({
    ttftMs: ppNs / 1e6,  // prefill alone: no sampling, no image
    prefillTokS: promptTokens / (ppNs / 1e9),
    decodeTokS: s.genTokens / (tg.samplesNs[i] / 1e9),
    promptTokens,
    generated: s.genTokens,
  }));
  return { runs, peakRssMiB: Math.max(pp.peakRssMiB, tg.peakRssMiB) };
}
