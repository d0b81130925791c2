/**
 * The sha256 of a file that grows at its end, computed on a thread of its own: the download
 * tells it how far the file is written, it reads and hashes those bytes (still in the page
 * cache) while the JS thread goes on receiving. Hashing a GiB takes most of a second of CPU;
 * on the JS thread it also stopped reading from the socket in the meantime.
 * @module
 */
import { Worker } from 'node:worker_threads';

/** @internal */
export type HasherCommand = { kind: 'hash'; end: number } | { kind: 'reset' } | { kind: 'digest' };
/** @internal */
export type HasherRequest = HasherCommand & { id: number };
/** @internal */
export interface HasherReply { id: number; hashed: number; sha256?: string; error?: { message: string; code?: string } }

const workerUrl = new URL('./file-hasher-worker.js', import.meta.url);

/** Hashes `path` from byte 0 up to where it is told, in order. */
export class FileHasher {
  #worker: Worker;
  #nextId = 0;
  #pending = new Map<number, { resolve: (reply: HasherReply) => void; reject: (err: Error) => void }>();
  #failure: Error | undefined;

  constructor(path: string) {
    // Flags meant for the application's entry (--input-type, loaders, profilers) have no business here.
    this.#worker = new Worker(workerUrl, { workerData: { path }, execArgv: [] });
    this.#worker.on('message', (reply: HasherReply) => {
      const pending = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if (!pending) return;
      if (reply.error) pending.reject(Object.assign(new Error(reply.error.message), { code: reply.error.code }));
      else pending.resolve(reply);
    });
    const fail = (err: Error) => {
      this.#failure ??= err;
      for (const { reject } of this.#pending.values()) reject(err);
      this.#pending.clear();
    };
    this.#worker.on('error', fail);
    this.#worker.on('exit', (code) => fail(new Error(`The hashing thread ended (code ${code})`)));
  }

  #send(request: HasherCommand): Promise<HasherReply> {
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ ...request, id });
    });
  }

  /** Hashes the bytes before `end` not hashed yet; resolves when it has. */
  hashTo(end: number): Promise<void> {
    return this.#send({ kind: 'hash', end }).then(() => {});
  }

  /** Asks for the bytes before `end` to be hashed, without waiting; a failure shows at the next wait. */
  advance(end: number): void {
    this.hashTo(end).catch((err: Error) => {
      this.#failure ??= err;
    });
  }

  /** Starts again from byte 0 (the file was truncated). */
  reset(): Promise<void> {
    return this.#send({ kind: 'reset' }).then(() => {});
  }

  /** The sha256 (hex) of everything asked for so far, once it is hashed. */
  async digest(): Promise<string> {
    const reply = await this.#send({ kind: 'digest' });
    return reply.sha256!;
  }

  /** Ends the thread; what is pending rejects. */
  async close(): Promise<void> {
    await this.#worker.terminate();
  }
}
