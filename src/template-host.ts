/**
 * @internal
 * Runs chat template renders in one long-lived child process (template-child.ts), one render
 * at a time, each under a time limit, the process under a heap limit.
 *
 * Why a process, not only a worker_thread: measured on node 20, a worker with
 * `resourceLimits` that grows one array past its heap limit (`range(1e9)`, a list doubled in a
 * loop) aborts the whole process ("Reached heap limit"), and V8's "invalid size" fatal does the
 * same. A child process can die of anything, and the application sees only an exit. The
 * child renders in a worker of its own and ends that on a time limit or abort, because each
 * new child costs a fork() that grows with our resident memory (measured: 180-340 ms with 2 GB
 * resident on this 2-core machine). The host itself lives in a thread of ours
 * (template-thread.ts), so that fork() does not stop the application's JS thread.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ChatMessage } from './template.js';

/** @internal What the host sends: one render. */
export interface RenderRequest {
  kind: 'render';
  id: number;
  source: string;
  messages: ChatMessage[];
  bosToken: string;
  eosToken: string;
  /** Longer output is refused in the child, so it never crosses the pipe. */
  maxChars: number;
  timeMs: number;
}

/** @internal Everything the host sends. */
export type ParentMessage = RenderRequest | { kind: 'abort'; id: number };

/** @internal What the child sends back. */
export type RenderReply =
  | { kind: 'ready'; id?: undefined }
  | { kind: 'text'; id: number; text: string }
  | { kind: 'output'; id: number; chars: number }
  | { kind: 'template'; id: number; message: string }
  | { kind: 'time'; id: number }
  | { kind: 'memory' | 'crash'; id: number; exit: string };

/** @internal Why a render failed without a reply from the child. */
export type RenderFailure =
  | { kind: 'time' }
  | { kind: 'memory' | 'crash'; exit: string }
  | { kind: 'start'; reason: string }
  | { kind: 'aborted' };

/** @internal The failure, or the child's own reply. */
export type RenderOutcome = Exclude<RenderReply, { kind: 'ready' }> | RenderFailure;

interface Job {
  request: RenderRequest;
  resolve: (outcome: RenderOutcome) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

// A child that does not say it is ready by then never will (a broken install, a full disk).
const START_LIMIT_MS = 30_000;
// The child times renders itself; this is for a child that stops answering altogether.
const BACKSTOP_MS = 5_000;
const childPath = fileURLToPath(new URL('./template-child.js', import.meta.url));

/** @internal One child, started on first use and again after it dies. */
export class TemplateHost {
  readonly #limits: { readonly timeMs: number; readonly heapMb: number };
  #child: ChildProcess | null = null;
  #ready = false;
  #startTimer: NodeJS.Timeout | null = null;
  #queue: Job[] = [];
  #current: Job | null = null;
  #timer: NodeJS.Timeout | null = null;
  #nextId = 1;

  constructor(limits: { readonly timeMs: number; readonly heapMb: number }) {
    this.#limits = limits;
  }

  /** Starts the child now, idle (it keeps nothing alive), so the first render does not wait for it. */
  prestart(): void {
    if (this.#child) return;
    this.#start();
    if (!this.#current && this.#queue.length === 0) this.#hold(false);
  }

  /** Queues a render; settles with the child's reply or with why there was none. Never rejects. */
  render(request: Omit<RenderRequest, 'kind' | 'id' | 'timeMs'>, signal?: AbortSignal): Promise<RenderOutcome> {
    return new Promise((resolve) => {
      const job: Job = {
        request: { ...request, kind: 'render', id: this.#nextId++, timeMs: this.#limits.timeMs },
        resolve,
        signal,
        onAbort: () => this.#abort(job),
      };
      signal?.addEventListener('abort', job.onAbort, { once: true });
      this.#queue.push(job);
      this.#pump();
    });
  }

  #settle(job: Job, outcome: RenderOutcome): void {
    job.signal?.removeEventListener('abort', job.onAbort);
    job.resolve(outcome);
  }

  #pump(): void {
    if (this.#current || this.#queue.length === 0) {
      if (!this.#current && this.#child) this.#hold(false);
      return;
    }
    if (!this.#child) this.#start();
    this.#hold(true);
    if (!this.#ready) return;
    const job = this.#queue.shift()!;
    this.#current = job;
    // setImmediate: a reply already in the pipe when the timer fires is read first, so a busy
    // event loop on our side does not fail a render that finished in time.
    this.#timer = setTimeout(() => setImmediate(() => this.#current === job && this.#fail({ kind: 'time' })), job.request.timeMs + BACKSTOP_MS);
    this.#child!.send(job.request satisfies ParentMessage);
  }

  #start(): void {
    const env = { ...process.env };
    // Preloads and inspector flags meant for the application have no business here.
    delete env.NODE_OPTIONS;
    // Electron's binary is node only when told so.
    if (process.versions.electron) env.ELECTRON_RUN_AS_NODE = '1';
    let child: ChildProcess;
    try {
      child = fork(childPath, [String(this.#limits.heapMb)], {
        execArgv: [`--max-old-space-size=${this.#limits.heapMb}`],
        env,
        stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
        serialization: 'json',
      });
    } catch (err) {
      this.#failAll({ kind: 'start', reason: (err as Error).message });
      return;
    }
    this.#child = child;
    this.#ready = false;
    this.#startTimer = setTimeout(() => this.#child === child && this.#failAll({ kind: 'start', reason: `it did not start within ${START_LIMIT_MS / 1000} s` }), START_LIMIT_MS);
    // Only renders waiting for the child need this timer, and they hold the child itself.
    this.#startTimer.unref();
    child.on('message', (reply: RenderReply) => this.#child === child && this.#onReply(reply));
    // Once started, an error is a send to a child on its way out; its 'exit' says why.
    child.on('error', (err) => this.#child === child && !this.#ready && this.#failAll({ kind: 'start', reason: err.message }));
    child.on('exit', (code, signal) => this.#child === child && this.#onExit(code, signal));
  }

  #onReply(reply: RenderReply): void {
    if (reply.kind === 'ready') {
      this.#ready = true;
      clearTimeout(this.#startTimer!);
      this.#pump();
      return;
    }
    const job = this.#current;
    if (!job || job.request.id !== reply.id) return;
    clearTimeout(this.#timer!);
    this.#current = null;
    this.#settle(job, reply);
    this.#pump();
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    const exit = `the renderer process ${signal ? `was killed by ${signal}` : `ended with code ${code}`}`;
    if (!this.#ready) this.#failAll({ kind: 'start', reason: `${exit} as it started` });
    // V8 aborts (heap limit) or traps (a string or array over its maximum size).
    else this.#fail({ kind: signal === 'SIGABRT' || signal === 'SIGTRAP' ? 'memory' : 'crash', exit });
  }

  // Ends the child and the render it holds; the queue goes on in a fresh child.
  #fail(outcome: RenderFailure): void {
    const job = this.#current;
    this.#current = null;
    clearTimeout(this.#timer!);
    this.#kill();
    if (job) this.#settle(job, outcome);
    this.#pump();
  }

  // The child could not start: every waiting render fails, and the next one tries again.
  #failAll(outcome: RenderFailure): void {
    const jobs = [...(this.#current ? [this.#current] : []), ...this.#queue.splice(0)];
    this.#current = null;
    clearTimeout(this.#timer!);
    this.#kill();
    for (const job of jobs) this.#settle(job, outcome);
  }

  #abort(job: Job): void {
    if (this.#current === job) {
      this.#current = null;
      clearTimeout(this.#timer!);
      this.#child?.send({ kind: 'abort', id: job.request.id } satisfies ParentMessage);
      this.#settle(job, { kind: 'aborted' });
      return this.#pump();
    }
    const i = this.#queue.indexOf(job);
    if (i >= 0) this.#queue.splice(i, 1);
    this.#settle(job, { kind: 'aborted' });
    this.#pump();
  }

  #kill(): void {
    const child = this.#child;
    this.#child = null;
    this.#ready = false;
    clearTimeout(this.#startTimer!);
    if (!child) return;
    child.removeAllListeners('message');
    // An error after this one (EPIPE on a late send) is of no interest.
    child.on('error', () => {});
    child.kill('SIGKILL');
    child.unref();
  }

  // An idle child must not keep the application alive; a render in flight must.
  #hold(busy: boolean): void {
    const child = this.#child;
    if (!child) return;
    if (busy) {
      child.ref();
      child.channel?.ref();
    } else {
      child.unref();
      child.channel?.unref();
    }
  }
}
