/**
 * @internal
 * The server's sessions ("slots") and the line in front of them. A request takes the free slot
 * whose context already holds the longest prefix of its conversation, so a follow-up turn
 * evaluates only its new tokens; when none is free it waits in a bounded FIFO queue.
 */
import { AbortedError } from '../errors.js';
import type { Model } from '../model.js';
import type { Session, SessionOptions } from '../session.js';
import { HttpError } from './openai.js';

export interface Slot {
  readonly index: number;
  readonly session: Session;
  /** Fingerprints of the messages the session's context holds, in order. */
  conversation: string[];
}

interface Waiter {
  conversation: string[];
  resolve: (slot: Slot) => void;
  reject: (err: Error) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

function sharedPrefix(a: string[], b: string[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

export class SlotPool {
  readonly #free: Slot[];
  readonly #all: Slot[];
  readonly #queue: Waiter[] = [];
  readonly #maxQueue: number;
  #closed: Error | undefined;
  /** Called whenever the number of busy slots or waiting requests changes. */
  onChange: (busy: number, waiting: number) => void = () => {};

  constructor(model: Model, count: number, maxQueue: number, sessionOptions: SessionOptions) {
    this.#all = Array.from({ length: count }, (_, index) => ({ index, session: model.createSession(sessionOptions), conversation: [] }));
    this.#free = [...this.#all];
    this.#maxQueue = maxQueue;
  }

  get size(): number {
    return this.#all.length;
  }

  /** Tokens of context each session has. */
  get contextSize(): number {
    return this.#all[0]?.session.stats.contextSize ?? 0;
  }

  get busy(): number {
    return this.#all.length - this.#free.length;
  }

  get waiting(): number {
    return this.#queue.length;
  }

  /**
   * A slot for a conversation: at once when one is free (the one holding the longest prefix of
   * it), else after the requests before it. Rejects with a 503 when the queue is full, with
   * AbortedError when `signal` aborts while waiting.
   */
  acquire(conversation: string[], signal?: AbortSignal): Promise<Slot> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (signal?.aborted) return Promise.reject(new AbortedError('The request was cancelled while waiting for a slot'));
    if (this.#free.length > 0) {
      const slot = this.#take(conversation);
      this.onChange(this.busy, this.waiting);
      return Promise.resolve(slot);
    }
    if (this.#queue.length >= this.#maxQueue) {
      return Promise.reject(
        new HttpError(503, `The server is busy: ${this.#all.length} requests are running and ${this.#queue.length} are waiting; try again shortly`, 'server_error', 'server_busy', null, { 'retry-after': '1' }),
      );
    }
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter = { conversation, resolve, reject, signal };
      if (signal) {
        waiter.onAbort = () => {
          const i = this.#queue.indexOf(waiter);
          if (i >= 0) this.#queue.splice(i, 1);
          this.onChange(this.busy, this.waiting);
          reject(new AbortedError('The request was cancelled while waiting for a slot'));
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.#queue.push(waiter);
      this.onChange(this.busy, this.waiting);
    });
  }

  /** Gives a slot back with what its context now holds; the first waiter gets a slot. */
  release(slot: Slot, conversation: string[]): void {
    slot.conversation = conversation;
    this.#free.push(slot);
    const next = this.#queue.shift();
    if (next) {
      if (next.onAbort) next.signal?.removeEventListener('abort', next.onAbort);
      next.resolve(this.#take(next.conversation));
    }
    this.onChange(this.busy, this.waiting);
  }

  #take(conversation: string[]): Slot {
    let best = 0;
    let bestShared = -1;
    this.#free.forEach((slot, i) => {
      const shared = sharedPrefix(slot.conversation, conversation);
      // Ties go to the slot whose context holds least: it has least worth keeping.
      if (shared > bestShared || (shared === bestShared && slot.conversation.length < this.#free[best]!.conversation.length)) {
        best = i;
        bestShared = shared;
      }
    });
    return this.#free.splice(best, 1)[0]!;
  }

  /** Refuses new requests and rejects the waiting ones with `reason`. */
  close(reason: Error): void {
    this.#closed ??= reason;
    for (const waiter of this.#queue.splice(0)) {
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.reject(reason);
    }
    this.onChange(this.busy, this.waiting);
  }

  /** Frees every session (stopping what runs on them). */
  async dispose(): Promise<void> {
    await Promise.all(this.#all.map((slot) => slot.session.dispose()));
  }
}
