// Contender: llama.cpp's own llama-mtmd-cli, built from the same source as our addon, on the
// image workload: one process per run (the first, a warm-up, is dropped), figures from its own
// log lines (-v prints llama.cpp's perf counters), memory from /usr/bin/time.
import { join } from 'node:path';
import { llamaBuffers } from '../llama-log.mjs';
import { oracles } from '../models.mjs';
import { runTool } from '../spawn.mjs';
import { imagePromptParts } from '../workload.mjs';

const TOOL = join(oracles, 'llama-mtmd-cli');
const MARKER = '<__media__>';

function num(re, text) {
  const m = re.exec(text);
  return m ? Number(m[1]) : NaN;
}

/** Settings: model, projector, pictures, promptTokens, genTokens, images, runs, threads, ctx. */
export async function run(s) {
  const runs = [];
  let peak = 0, buffers;
  for (let r = 0; r <= s.runs; r++) {  // run 0, short, warms the page cache and is dropped
    const warm = r === 0;
    const p = imagePromptParts(warm ? 8 : s.promptTokens, r, s.images);
    const images = s.pictures.slice(0, s.images).flatMap((f) => ['--image', f]);
    const prompt = p.before + MARKER.repeat(s.images) + p.after;  // the CLI wraps it in the model's chat template
    const out = await runTool(TOOL, ['-m', s.model, '--mmproj', s.projector, ...images, '-p', prompt, '-n', String(warm ? 4 : s.genTokens),
      '--temp', '0', '--ignore-eos', '-t', String(s.threads), '-c', String(s.ctx), '-ngl', '0', '-v']);
    const log = out.stderr;
    const encodeMs = [...log.matchAll(/mtmd batch encoding done in (\d+) ms/g)].reduce((a, m) => a + Number(m[1]), 0);
    const promptMs = num(/prompt eval time =\s+([\d.]+) ms/, log);
    const promptTokens = num(/prompt eval time =\s+[\d.]+ ms \/\s+(\d+) tokens/, log);
    const evalMs = num(/\beval time =\s+([\d.]+) ms \/\s+\d+ runs/, log.replace(/prompt eval time/g, ''));
    const evalRuns = num(/\beval time =\s+[\d.]+ ms \/\s+(\d+) runs/, log.replace(/prompt eval time/g, ''));
    buffers = llamaBuffers(log);
    peak = Math.max(peak, out.peakRssMiB);
    if (warm) continue;
    runs.push({
      encodeMs,
      ttftMs: encodeMs + promptMs,
      prefillTokS: promptTokens / (promptMs / 1000),
      decodeTokS: evalRuns / (evalMs / 1000),
      promptTokens,
      generated: evalRuns + 1,  // the first token comes from the prompt's logits
      loadMs: num(/load time =\s+([\d.]+) ms/, log),
    });
  }
  return { runs, peakRssMiB: peak, buffers };
}
