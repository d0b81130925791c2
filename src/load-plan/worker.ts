/**
 * @internal
 * The thread that plans a load (plan.ts): its answer is the plan, or the error as data.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MinigptError } from '../errors.js';
import { planLoad, type PlanInput } from './plan.js';

planLoad(workerData as PlanInput).then(
  (plan) => parentPort!.postMessage({ plan }),
  (err: unknown) => {
    const e = err as Error;
    parentPort!.postMessage({ error: { message: e?.message ?? String(err), code: err instanceof MinigptError ? err.code : undefined, stack: e?.stack } });
  },
);
