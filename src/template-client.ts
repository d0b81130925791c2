/**
 * @internal
 * The JS thread's side of the template renderer: renders go to the thread that owns the
 * renderer's child process (template-thread.ts) and their outcomes come back. The thread is
 * started on first use and again after it dies; it keeps the application alive only while a
 * render is waiting.
 */
import { Worker } from 'node:worker_threads';
import type { RenderOutcome, RenderRequest } from './template-host.js';
import type { ThreadMessage } from './template-thread.js';

interface Pending {
  resolve: (outcome: RenderOutcome) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

const threadUrl = new URL('./template-thread.js', import.meta.url);

export class TemplateClient {
  readonly #limits: { readonly timeMs: number; readonly heapMb: number };
  #thread: Worker | null = null;
  #pending = new Map<number, Pending>();
  #nextId = 1;

  constructor(limits: { readonly timeMs: number; readonly heapMb: number }) {
    this.#limits = limits;
  }

  /** Starts the renderer now, so the first render does not wait for it. */
  prestart(): void {
    this.#post({ kind: 'prestart', limits: this.#currentLimits() });
  }

  /** Settles with the renderer's outcome; never rejects. */
  render(request: Omit<RenderRequest, 'kind' | 'id' | 'timeMs'>, signal?: AbortSignal): Promise<RenderOutcome> {
    return new Promise((resolve) => {
      const id = this.#nextId++;
      const pending: Pending = {
        resolve,
        signal,
        onAbort: () => {
          this.#thread?.postMessage({ kind: 'abort', id } satisfies ThreadMessage);
          this.#settle(id, { kind: 'aborted' });
        },
      };
      signal?.addEventListener('abort', pending.onAbort, { once: true });
      this.#pending.set(id, pending);
      this.#post({ kind: 'render', id, limits: this.#currentLimits(), request });
    });
  }

  #currentLimits() {
    return { timeMs: this.#limits.timeMs, heapMb: this.#limits.heapMb };
  }

  #post(message: ThreadMessage): void {
    const thread = (this.#thread ??= this.#start());
    if (this.#pending.size > 0) thread.ref();
    thread.postMessage(message);
  }

  #start(): Worker {
    // Flags meant for the application's entry (--input-type, loaders) have no business here.
    const thread = new Worker(threadUrl, { execArgv: [] });
    thread.on('message', ({ id, outcome }: { id: number; outcome: RenderOutcome }) => this.#settle(id, outcome));
    const fail = (reason: string) => {
      if (this.#thread !== thread) return;
      this.#thread = null;
      for (const id of [...this.#pending.keys()]) this.#settle(id, { kind: 'start', reason });
    };
    thread.on('error', (err) => fail(`its thread failed: ${err.message}`));
    thread.on('exit', (code) => fail(`its thread ended with code ${code}`));
    // After the listeners: adding a 'message' listener refs the thread's port again.
    thread.unref();
    return thread;
  }

  #settle(id: number, outcome: RenderOutcome): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    pending.signal?.removeEventListener('abort', pending.onAbort);
    if (this.#pending.size === 0) this.#thread?.unref();
    pending.resolve(outcome);
  }
}
