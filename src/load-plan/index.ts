/**
 * @internal
 * What loadModel knows before native code opens a file: one call that reads the headers once,
 * runs every check and returns a {@link LoadPlan}, computed on a worker thread so that reading
 * a large vocabulary never holds up the JS thread (it took 90 ms in one piece for a
 * 32000-token vocabulary, over five 60 Hz frames).
 */
import { Worker } from 'node:worker_threads';
import { AbortedError, ModelLoadError, errorFromCode } from '../errors.js';
import type { LoadPlan, PlanInput } from './plan.js';

export { checkLoadedFiles } from './loaded-files-check.js';
export { checkFile, checkTextModelFile, type LoadPlan, type PlanInput, type PlannedFile } from './plan.js';

const workerUrl = new URL('./worker.js', import.meta.url);

/** planLoad (plan.ts) on a thread of its own; rejects with the same typed errors it would throw. */
export function planLoadOffThread(input: PlanInput, signal?: AbortSignal): Promise<LoadPlan> {
  return new Promise((resolve, reject) => {
    // Flags meant for the application's entry (--input-type, loaders, profilers) have no business here.
    const worker = new Worker(workerUrl, { workerData: input, execArgv: [] });
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const onAbort = () => {
      settle(() => reject(new AbortedError('Model load aborted', { cause: signal!.reason })));
      void worker.terminate();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (message: { plan?: LoadPlan; error?: { message: string; code?: string } }) => {
      settle(() => {
        if (message.plan) resolve(message.plan);
        else {
          const { code, message: text } = message.error!;
          // The same error as the thread threw, typed by the one code-to-class table.
          reject(code ? errorFromCode(code, text) : new ModelLoadError('ERR_MODEL_LOAD', `Checking the model files failed: ${text}`));
        }
      });
    });
    worker.once('error', (err) => settle(() => reject(new ModelLoadError('ERR_MODEL_LOAD', `Checking the model files failed: ${err.message}`, { cause: err }))));
    worker.once('exit', (code) => settle(() => reject(new ModelLoadError('ERR_MODEL_LOAD', `Checking the model files failed: its thread ended (code ${code})`))));
  });
}
