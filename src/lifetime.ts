/**
 * @internal
 * Lifetimes of objects that own native memory: dispose waits for in-flight work, and a
 * per-object lock runs streams one after another while honouring AbortSignals.
 */
import { AbortedError, DisposedError } from './errors.js';

/** Counts operations in flight; dispose() waits until they have all let go. */
export class DisposeGuard {
  #active = 0;
  #idle: Array<() => void> = [];
  #disposed = false;
  constructor(private readonly what: string) {}

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Throws ERR_DISPOSED after dispose; else holds off disposal until the handle is released. */
  hold(): { [Symbol.dispose](): void; release(): void } {
    if (this.#disposed) throw new DisposedError(this.what);
    this.#active++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (--this.#active === 0) for (const resolve of this.#idle.splice(0)) resolve();
    };
    return { release, [Symbol.dispose]: release };
  }

  throwIfDisposed(): void {
    if (this.#disposed) throw new DisposedError(this.what);
  }

  /** Marks disposed (new work is refused) and resolves once in-flight work has finished. */
  async dispose(): Promise<boolean> {
    const first = !this.#disposed;
    this.#disposed = true;
    if (this.#active > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
    return first;
  }
}

/** A FIFO mutex whose waiters can give up through an AbortSignal. */
export class AsyncLock {
  #held = false;
  #queue: Array<{ grant: () => void; fail: (err: Error) => void }> = [];
  #closed: (() => Error) | undefined;

  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.#closed) throw this.#closed();
    if (!this.#held) {
      this.#held = true;
      return () => this.#release();
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(() => this.#release());
        },
        fail: (err: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      const onAbort = () => {
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
        reject(new AbortedError('The operation was aborted while waiting for the session', { cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  /** Rejects every waiter, and every later acquire, with `makeError()`; the holder keeps the lock until it releases. */
  close(makeError: () => Error): void {
    this.#closed ??= makeError;
    for (const waiter of this.#queue.splice(0)) waiter.fail(makeError());
  }

  #release(): void {
    const next = this.#queue.shift();
    if (next) next.grant();
    else this.#held = false;
  }
}
