/**
 * @internal
 * One long task of a command (convert, quantize): a progress bar on stderr when it is a
 * terminal, and Ctrl-C aborting the task through its signal instead of killing the process
 * mid-write (the task then removes its partial output).
 */
import cliProgress from 'cli-progress';

/** Reports progress as `value` of `total` (units of the bar's format). */
export type ReportProgress = (value: number, total: number) => void;

export async function withTaskProgress<T>(format: string, task: (signal: AbortSignal, report: ReportProgress) => Promise<T>): Promise<T> {
  const bar = new cliProgress.SingleBar({ format, stream: process.stderr, hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic);
  const interactive = process.stderr.isTTY;
  let started = false;
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGINT', stop);
  try {
    return await task(controller.signal, (value, total) => {
      if (!interactive) return;
      if (!started) {
        bar.start(total, value);
        started = true;
      } else bar.update(value);
    });
  } finally {
    process.removeListener('SIGINT', stop);
    if (started) bar.stop();
  }
}
