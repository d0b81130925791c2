// Contender: minigpt-node, through its public API only, as an app would use it. Run by the
// driver in a child process of its own; prints one BENCH_RESULT line.
//
// Settings: model, projector, pictures, workload ('text' | 'image', or 'load' | 'load-image' to
// load and exit), promptTokens, genTokens, images, runs, threads, ctx.
import { loadModel } from '../../dist/index.js';
import { emit, lagMonitor, now, runFigures, settings } from '../child.mjs';
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
for (let r = 0; r <= s.runs; r++) {  // run 0, short, warms up (page faults, the context's first allocation) and is dropped
  const warm = r === 0;
  const n = warm ? 8 : s.promptTokens;
  await session.reset();
  let content, encodeMs = NaN;
  const embeddings = [];
  if (s.workload === 'image') {
    const p = imagePromptParts(n, r, s.images);
    const e0 = now();
    for (let i = 0; i < s.images; i++) embeddings.push(await model.encodeImage(s.pictures[i % s.pictures.length]));
    encodeMs = now() - e0;
    content = [p.before, ...embeddings, p.after];
  } else {
    content = promptText(n, r);
  }
  let tFirst = NaN, tLast = NaN;
  lag.start();
  const start = now();
  for await (const _piece of session.stream(content, { maxTokens: warm ? 4 : s.genTokens, temperature: 0 })) {
    tLast = now();
    if (Number.isNaN(tFirst)) tFirst = tLast;
  }
  const l = lag.stop();
  const st = session.stats;
  for (const e of embeddings) await e.dispose();
  if (!warm) runs.push(runFigures({ t0: start, tFirst, tLast, promptTokens: st.evaluatedTokens, generated: st.generatedTokens, encodeMs, lag: l }));
}
emit({ loadMs, runs });
