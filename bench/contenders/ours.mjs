// Contender: minigpt-node, through its public API only, as an app would use it. Run by the
// driver in a child process of its own; prints one BENCH_RESULT line.
//
// Settings: model, projector, pictures, workload ('text' | 'image', or 'load' | 'load-image' to
// load and exit), promptTokens, genTokens, images, runs, threads, ctx.
import { loadModel } from '../../dist/index.js';
import { emit, jsThreadCpuMs, lagMonitor, now, runFigures, schedule, settings, withLag } from '../child.mjs';
import { promptText, imagePromptParts } from '../workload.mjs';

const s = settings();
const t0 = now();
const withProjector = s.workload === 'image' || s.workload === 'load-image';
const model = await loadModel({ model: s.model, projector: withProjector ? s.projector : undefined, threads: s.threads, contextSize: s.ctx });
const loadMs = now() - t0;
if (s.workload.startsWith('load')) emit({ loadMs });

// Raw text for the text workload, the model's own chat template for the image turn: the way
// an app asks a question about a picture.
const session = model.createSession({ template: s.workload === 'text' ? 'none' : 'auto', threads: s.threads });
const lag = lagMonitor();
const runs = [];
let lagged;
for (const run of schedule(s.runs)) {
  await session.reset();
  let content, encodeMs = NaN;
  const embeddings = [];
  if (s.workload === 'image') {
    const p = imagePromptParts(s.promptTokens, run.index, s.images);
    const e0 = now();
    for (let i = 0; i < s.images; i++) embeddings.push(await model.encodeImage(s.pictures[i % s.pictures.length]));
    encodeMs = now() - e0;
    content = [p.before, ...embeddings, p.after];
  } else {
    content = promptText(s.promptTokens, run.index);
  }
  let tFirst = NaN, tLast = NaN, cpuFirst = NaN;
  if (run.lag) lag.start();
  const start = now();
  for await (const _piece of session.stream(content, { maxTokens: s.genTokens, temperature: 0 })) {
    tLast = now();
    if (Number.isNaN(tFirst)) [tFirst, cpuFirst] = [tLast, jsThreadCpuMs()];
  }
  const jsCpuMs = jsThreadCpuMs() - cpuFirst;
  if (run.lag) lagged = lag.stop();
  const st = session.stats;
  for (const e of embeddings) await e.dispose();
  if (!run.warm && !run.lag) runs.push(runFigures({ t0: start, tFirst, tLast, promptTokens: st.evaluatedTokens, generated: st.generatedTokens, encodeMs, jsCpuMs }));
}
emit({ loadMs, runs: withLag(runs, lagged) });
