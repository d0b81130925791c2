// What llama.cpp and libmtmd say they allocated, read from their own log lines (ours prints
// them with MINIGPT_LOG=info, llama-mtmd-cli with -v): the memory a contender is expected to
// hold, to compare its peak RSS with.

// "load_tensors:   CPU_REPACK model buffer size =   519.75 MiB", "llama_kv_cache: CPU KV buffer
// size = 44.00 MiB", "sched_reserve: CPU compute buffer size = 70.50 MiB", "load_hparams: model
// size: 175.18 MiB" (the projector's weights).
const LINE = /(\w+):\s+(\S+)\s+(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB/;
const CLIP_MODEL = /load_hparams: model size:\s+([\d.]+) MiB/;

/**
 * Sums the last report of each buffer (tools may log a dry-run fit first, then the real one).
 * Returns MiB: { weights, kv, compute, output, total } (NaN when nothing was logged).
 */
export function llamaBuffers(log) {
  const last = new Map();
  let clipModel = 0;
  for (const line of log.split('\n')) {
    const m = LINE.exec(line);
    if (m) last.set(`${m[1]}|${m[2]}|${m[3]}`, { kind: m[3], mib: Number(m[4]) });
    const c = CLIP_MODEL.exec(line);
    if (c) clipModel = Number(c[1]);
  }
  if (last.size === 0) return { weights: NaN, kv: NaN, compute: NaN, output: NaN, total: NaN };
  const sum = (kind) => [...last.values()].filter((b) => b.kind === kind).reduce((a, b) => a + b.mib, 0);
  const out = { weights: sum('model') + clipModel, kv: sum('KV'), compute: sum('compute'), output: sum('output') };
  return { ...out, total: out.weights + out.kv + out.compute + out.output };
}
