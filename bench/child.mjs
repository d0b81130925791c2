// What every contender child shares: its settings in, one result line out, and the two
// measurements only the process itself can take (its peak RSS, its event loop's lag).
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

export const RESULT_PREFIX = 'BENCH_RESULT ';

/** The settings the driver passed as the first argument (JSON). */
export function settings() {
  return JSON.parse(process.argv[2] ?? '{}');
}

/** Peak resident set of this process so far, MiB (VmHWM: mapped model pages count too). */
export function peakRssMiB() {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Hands the result to the driver and ends the process (so nothing lingers after a peer's dispose). */
export function emit(result) {
  process.stdout.write(`\n${RESULT_PREFIX}${JSON.stringify({ ...result, peakRssMiB: peakRssMiB() })}\n`);
  process.exit(0);
}

// The histogram samples a timer every RESOLUTION ms and records the whole interval, so an idle
// loop reads ~1 ms: the lag is what exceeds the interval.
const RESOLUTION = 1;

/** Event-loop lag while something runs: start(), then stop() gives { p99, max } in ms. */
export function lagMonitor() {
  const h = monitorEventLoopDelay({ resolution: RESOLUTION });
  return {
    start() {
      h.reset();
      h.enable();
    },
    stop() {
      h.disable();
      const lag = (ns) => Math.max(0, ns / 1e6 - RESOLUTION);
      return h.count > 0 ? { p99: lag(h.percentile(99)), max: lag(h.max) } : { p99: NaN, max: NaN };
    },
  };
}

export const now = () => performance.now();

/**
 * CPU time the JS thread has used so far, ms: the main thread's own line of the scheduler's
 * accounting (Linux /proc/self/task/<pid>/schedstat), NaN where there is none. Read twice per
 * run, never per token: the read is a file read on the very thread it measures.
 */
export function jsThreadCpuMs() {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return NaN;
  }
}

/**
 * The runs every Node contender makes, in order: a warm-up of the full workload (dropped, as
 * llama-bench drops its own), `runs` timed runs, then one more run of the same work with the lag
 * monitor on. The monitor's 1 ms timer wakes the JS thread a thousand times a second, and on a
 * 2-core machine running 2 compute threads each wake-up takes a core from them, so rates are
 * timed without it and the lag comes from a run of its own. `index` numbers the runs (each
 * run's prompt starts with a different word).
 */
export function* schedule(runs) {
  for (let index = 0; index <= runs + 1; index++) yield { index, warm: index === 0, lag: index === runs + 1 };
}

/** The lag run's figures on every timed run (they describe the same work in the same process). */
export function withLag(runs, lag) {
  return runs.map((r) => ({ ...r, lagP99Ms: lag?.p99 ?? NaN, lagMaxMs: lag?.max ?? NaN }));
}

/**
 * Per-run figures from the timestamps every Node contender can take the same way:
 * t0 request made, tFirst first token seen by JS, tLast last token seen by JS; jsCpuMs, the JS
 * thread's CPU time from the first token to the stream's end.
 */
export function runFigures({ t0, tFirst, tLast, promptTokens, generated, encodeMs = NaN, jsCpuMs = NaN, lag }) {
  return {
    encodeMs,
    ttftMs: (Number.isFinite(encodeMs) ? encodeMs : 0) + (tFirst - t0),
    prefillTokS: promptTokens / ((tFirst - t0) / 1000),
    decodeTokS: generated > 1 ? (generated - 1) / ((tLast - tFirst) / 1000) : NaN,
    jsMsPerToken: generated > 1 ? jsCpuMs / (generated - 1) : NaN,
    promptTokens,
    generated,
    lagP99Ms: lag?.p99 ?? NaN,
    lagMaxMs: lag?.max ?? NaN,
  };
}
