// Contender: node-llama-cpp (text only), the most used Node binding, from the CPU binaries it
// ships prebuilt in node_modules: it is told never to build, download or probe a GPU. Run by the
// driver in a child process of its own; prints one BENCH_RESULT line.
//
// Settings: model, promptTokens, genTokens, runs, threads, ctx.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { emit, lagMonitor, now, runFigures, settings } from '../child.mjs';
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
for (let r = 0; r <= s.runs; r++) {  // run 0 is a short warm-up and is dropped
  const warm = r === 0;
  await sequence.clearHistory();
  const tokens = [model.tokens.bos, ...model.tokenize(promptText(warm ? 8 : s.promptTokens, r))];
  const want = warm ? 4 : s.genTokens;
  let tFirst = NaN, tLast = NaN, generated = 0;
  lag.start();
  const start = now();
  // evaluate() yields the greedy token after each step and never stops by itself (EOS included).
  for await (const _token of sequence.evaluate(tokens, { temperature: 0 })) {
    tLast = now();
    if (Number.isNaN(tFirst)) tFirst = tLast;
    if (++generated >= want) break;
  }
  const l = lag.stop();
  if (!warm) runs.push(runFigures({ t0: start, tFirst, tLast, promptTokens: tokens.length, generated, lag: l }));
}
emit({ loadMs, runs, binary: llama.buildType, gpu: llama.gpu });
