// Contender: node-llama-cpp (text only), the most used Node binding, from the CPU binaries it
// ships prebuilt in node_modules: it is told never to build, download or probe a GPU. Run by the
// driver in a child process of its own; prints one BENCH_RESULT line.
//
// Settings: model, promptTokens, genTokens, runs, threads, ctx.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { emit, jsThreadCpuMs, lagMonitor, now, runFigures, schedule, settings, withLag } from '../child.mjs';
import { promptText } from '../workload.mjs';

const s = settings();
const t0 = now();
const llama = await getLlama({
  gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
  logLevel: LlamaLogLevel.error, maxThreads: s.threads,
});
const model = await llama.loadModel({ modelPath: s.model, gpuLayers: 0, useMmap: true });
const context = await model.createContext({ contextSize: s.ctx, batchSize: 512, threads: { ideal: s.threads, min: s.threads }, sequences: 1 });
const sequence = context.getSequence();
const loadMs = now() - t0;

const lag = lagMonitor();
const runs = [];
let lagged;
for (const run of schedule(s.runs)) {
  await sequence.clearHistory();
  const tokens = [model.tokens.bos, ...model.tokenize(promptText(s.promptTokens, run.index))];
  let tFirst = NaN, tLast = NaN, cpuFirst = NaN, generated = 0;
  if (run.lag) lag.start();
  const start = now();
  // evaluate() yields the greedy token after each step and never stops by itself (EOS included).
  for await (const _token of sequence.evaluate(tokens, { temperature: 0 })) {
    tLast = now();
    if (Number.isNaN(tFirst)) [tFirst, cpuFirst] = [tLast, jsThreadCpuMs()];
    if (++generated >= s.genTokens) break;
  }
  const jsCpuMs = jsThreadCpuMs() - cpuFirst;
  if (run.lag) lagged = lag.stop();
  if (!run.warm && !run.lag) runs.push(runFigures({ t0: start, tFirst, tLast, promptTokens: tokens.length, generated, jsCpuMs }));
}
emit({ loadMs, runs: withLag(runs, lagged), binary: llama.buildType, gpu: llama.gpu });
