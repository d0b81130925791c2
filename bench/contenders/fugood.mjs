// Contender: @fugood/llama.node, the peer binding with image input, from its prebuilt CPU
// binary on npm. Run by the driver in a child process of its own; prints one BENCH_RESULT line.
// Each run is one completion() call: the image (a file path) is loaded, encoded and evaluated
// inside it, so its encode time comes from its own libmtmd log line.
//
// Settings: model, projector, pictures, workload ('text' | 'image'), promptTokens, genTokens,
// images, runs, threads, ctx.
import * as peer from '@fugood/llama.node';
import { emit, lagMonitor, now, runFigures, settings } from '../child.mjs';
import { CHATML, imagePromptParts, promptText } from '../workload.mjs';

const { loadModel, toggleNativeLog, addNativeLogListener } = peer.loadModel ? peer : peer.default;
const s = settings();
let encodeLog = [];
addNativeLogListener((_level, text) => {
  const m = /(?:slice encoded|batch encoding done) in (\d+) ms/.exec(text);
  if (m) encodeLog.push(Number(m[1]));
});
await toggleNativeLog(true);

const t0 = now();
// One sequence (its default is 8 parallel slots) and the same context and batch sizes as the others.
const ctx = await loadModel({ model: s.model, n_ctx: s.ctx, n_batch: 512, n_ubatch: 512, n_threads: s.threads, n_gpu_layers: 0, n_parallel: 1, use_mmap: true });
if (s.workload === 'image' && !ctx.initMultimodal({ path: s.projector, use_gpu: false })) throw new Error('initMultimodal failed');
const loadMs = now() - t0;

const lag = lagMonitor();
const runs = [];
// Unlike the other Node contenders (see schedule() in child.mjs), a short warm-up and the lag
// monitor on during the timed runs: at 4-10x slower than the others a full-size warm-up and a run
// of its own for the lag would add some 20 minutes to the bench, and the monitor's cost (a few
// percent at most) changes none of the ratios against it.
for (let r = 0; r <= s.runs; r++) {  // run 0, short, warms up and is dropped
  const warm = r === 0;
  const n = warm ? 8 : s.promptTokens;
  let prompt, media;
  if (s.workload === 'image') {
    const p = imagePromptParts(n, r, s.images);
    prompt = CHATML.userStart + p.before + '<__media__>'.repeat(s.images) + p.after + CHATML.userEnd;
    media = s.pictures.slice(0, s.images);
  } else {
    prompt = promptText(n, r);
  }
  encodeLog = [];
  let tFirst = NaN, tLast = NaN;
  lag.start();
  const start = now();
  const result = await ctx.completion({ prompt, media_paths: media, n_predict: warm ? 4 : s.genTokens, ignore_eos: true, temperature: 0, seed: 1 }, () => {
    tLast = now();
    if (Number.isNaN(tFirst)) tFirst = tLast;
  });
  const l = lag.stop();
  await new Promise((resolve) => setTimeout(resolve, 100));  // its log lines reach JS asynchronously
  const encodeMs = encodeLog.length ? encodeLog.reduce((a, b) => a + b, 0) : NaN;
  if (warm) continue;
  // The request includes the encode here, so the prefill clock starts after it.
  const f = runFigures({ t0: start + (Number.isFinite(encodeMs) ? encodeMs : 0), tFirst, tLast, promptTokens: result.tokens_evaluated, generated: result.tokens_predicted, encodeMs, lag: l });
  runs.push({ ...f, native: result.timings });
}
emit({ loadMs, runs });
