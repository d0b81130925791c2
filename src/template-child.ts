/**
 * @internal
 * The chat template renderer process (see template-host.ts). A template is code from a model
 * file or the network: it renders in a worker thread here (template-worker.ts) that this
 * thread ends when the render outlasts its time limit or is aborted, so the process, and the
 * fork that made it, are paid for once. A template that makes V8 abort kills this process,
 * never the application.
 */
import { Worker } from 'node:worker_threads';
import type { ParentMessage, RenderReply, RenderRequest } from './template-host.js';

const heapMb = Number(process.argv[2]);
const send = (reply: RenderReply) => process.send!(reply);

let worker: Worker | null = null;
let workerReady = false;
let waiting: RenderRequest | null = null;
let current: { id: number; timer: NodeJS.Timeout } | null = null;

function startWorker(): Worker {
  const w = new Worker(new URL('./template-worker.js', import.meta.url), {
    // Growth in many small objects ends the worker alone; one huge array still aborts the
    // process (measured), which the parent reports as out of memory.
    resourceLimits: { maxOldGenerationSizeMb: heapMb, maxYoungGenerationSizeMb: 16 },
  });
  workerReady = false;
  w.on('message', (reply: RenderReply) => {
    if (w !== worker) return;
    if (reply.kind === 'ready') {
      workerReady = true;
      dispatch();
    } else if (current?.id === reply.id) {
      clearTimeout(current.timer);
      current = null;
      send(reply);
    }
  });
  w.on('error', (err: Error & { code?: string }) => {
    if (w !== worker) return;
    const id = current?.id ?? waiting?.id;
    end();
    if (id === undefined) return;
    if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') send({ kind: 'memory', id, exit: "the renderer's worker reached its heap limit" });
    else send({ kind: 'crash', id, exit: `the renderer's worker failed: ${err.message}` });
  });
  w.on('exit', (code) => {
    if (w !== worker) return;
    const id = current?.id ?? waiting?.id;
    end();
    if (id !== undefined) send({ kind: 'crash', id, exit: `the renderer's worker ended with code ${code}` });
  });
  return w;
}

function dispatch(): void {
  if (!waiting) return;
  worker ??= startWorker();
  if (!workerReady) return;
  const req = waiting;
  waiting = null;
  // This thread is idle while the worker renders, so the timer fires on time.
  current = {
    id: req.id,
    timer: setTimeout(() => {
      end();
      send({ kind: 'time', id: req.id });
    }, req.timeMs),
  };
  worker.postMessage(req);
}

// Ends the worker and whatever it holds; the next render starts another.
function end(): void {
  if (current) clearTimeout(current.timer);
  current = null;
  waiting = null;
  const w = worker;
  worker = null;
  workerReady = false;
  void w?.terminate();
}

process.on('message', (msg: ParentMessage) => {
  if (msg.kind === 'abort') {
    if (current?.id === msg.id || waiting?.id === msg.id) end();
    return;
  }
  waiting = msg;
  dispatch();
});
// The parent gone (exit, crash, SIGKILL) closes the channel: nothing is left to render for.
process.on('disconnect', () => process.exit(0));
// Started now, so the first render does not wait for it.
worker = startWorker();
send({ kind: 'ready' });
