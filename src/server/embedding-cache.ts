/**
 * Identical images (by the sha256 of their bytes) are encoded once: a bounded LRU of
 * embeddings shared by every request of the server.
 * @module
 */
import { webcrypto } from 'node:crypto';
import type { ImageEmbedding } from '../embedding.js';
import { AbortedError, DisposedError, InvalidArgumentError, throwIfAborted } from '../errors.js';
import type { Model } from '../model.js';

/** One holder's use of a cached embedding; call `release()` when the request is done with it. */
export interface EmbeddingLease {
  embedding: ImageEmbedding;
  /** Hex sha256 of the image bytes. */
  hash: string;
  /** Lets go of the embedding. Idempotent. */
  release(): void;
}

/** Image bytes with the hex sha256 that identifies them (see {@link imageHash}). */
export interface HashedImage {
  bytes: Uint8Array;
  hash: string;
}

/** The hex sha256 of image bytes, computed off the JS thread (it matters at 20 MB images). */
export async function imageHash(bytes: Uint8Array): Promise<string> {
  if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError(`Expected a Buffer or Uint8Array for the image bytes but received ${typeof bytes}`);
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', bytes)).toString('hex');
}

/** Counters for metrics. */
export interface EmbeddingCacheStats {
  /** Acquires served without an encode of their own (cached, or sharing one in progress). */
  hits: number;
  /** Encodes started. */
  misses: number;
  /** Embeddings in the LRU now. */
  entries: number;
}

interface Entry {
  hash: string;
  embedding: ImageEmbedding;
  leases: number;
  evicted: boolean;
}

interface Waiter {
  resolve(lease: EmbeddingLease): void;
  reject(err: unknown): void;
}

/**
 * Encodes each distinct image once and keeps the last `maxEntries` embeddings.
 *
 * An embedding stays usable (not disposed) while any lease on it is held, even after the LRU
 * drops it: sessions refuse a disposed embedding in a new prompt, so eviction only disposes it
 * once its last lease is released. Sessions that already used it keep its native memory
 * themselves until they let go.
 */
export class EmbeddingCache {
  readonly #model: Model;
  readonly #maxEntries: number;
  // Map order is the LRU order: oldest first.
  readonly #entries = new Map<string, Entry>();
  readonly #pending = new Map<string, Set<Waiter>>();
  #hits = 0;
  #misses = 0;
  #disposed = false;

  /**
   * @param model The model that encodes the images.
   * @param maxEntries Embeddings kept after their requests end; 0 keeps none (concurrent
   *   requests for the same image still share one encode).
   */
  constructor(model: Model, maxEntries: number) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 0) {
      throw new InvalidArgumentError(`Expected integer of 0 or more for maxEntries but received ${String(maxEntries)} of type ${typeof maxEntries}`);
    }
    this.#model = model;
    this.#maxEntries = maxEntries;
  }

  /** Embeddings in the LRU. */
  get size(): number {
    return this.#entries.size;
  }

  /** Hit, miss and entry counts. */
  stats(): EmbeddingCacheStats {
    return { hits: this.#hits, misses: this.#misses, entries: this.#entries.size };
  }

  /**
   * The embedding of an image, encoded now or taken from the cache.
   * @param image Image file bytes (any format `Model.encodeImage` reads), or the bytes with
   *   their {@link imageHash} when the caller has it already.
   * @param signal Stops this caller's wait; an encode that others share goes on for them.
   * @throws ImageError from the encode (not cached: the next acquire tries again);
   *   AbortedError; DisposedError after `dispose()`.
   */
  async acquire(image: Uint8Array | HashedImage, signal?: AbortSignal): Promise<EmbeddingLease> {
    this.#throwIfDisposed();
    throwIfAborted(signal);
    const bytes = image instanceof Uint8Array ? image : image?.bytes;
    const hash = image instanceof Uint8Array || typeof image?.hash !== 'string' ? await imageHash(bytes) : image.hash;
    this.#throwIfDisposed();
    throwIfAborted(signal);

    const entry = this.#entries.get(hash);
    if (entry && !entry.embedding.disposed) {
      this.#hits++;
      this.#entries.delete(hash);
      this.#entries.set(hash, entry);
      return this.#lease(entry);
    }
    // Disposed behind our back (the model was disposed): encode again, which reports why.
    if (entry) this.#entries.delete(hash);

    let waiters = this.#pending.get(hash);
    if (waiters) this.#hits++;
    else {
      this.#misses++;
      waiters = new Set();
      this.#pending.set(hash, waiters);
      this.#encode(hash, bytes, waiters);
    }
    return this.#wait(waiters, signal);
  }

  /** Disposes every embedding (those still leased when their last lease is released); pending acquires reject with `ERR_DISPOSED`. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    for (const e of entries) this.#evict(e);
    const waiting = [...this.#pending.values()];
    this.#pending.clear();
    for (const set of waiting) for (const w of set) w.reject(new DisposedError('This embedding cache'));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  // Not bound to any caller's signal: other callers may be waiting for the same encode, and
  // the native encode cannot be stopped half-way anyway; a finished one is cached for the next.
  #encode(hash: string, bytes: Uint8Array, waiters: Set<Waiter>): void {
    this.#model.encodeImage(bytes).then(
      (embedding) => {
        if (this.#pending.get(hash) === waiters) this.#pending.delete(hash);
        if (this.#disposed) {
          void embedding.dispose();
          return;
        }
        const entry: Entry = { hash, embedding, leases: 0, evicted: false };
        // Leases first, synchronously: nothing can evict the entry before its waiters hold it.
        for (const w of waiters) w.resolve(this.#lease(entry));
        waiters.clear();
        this.#entries.set(hash, entry);
        while (this.#entries.size > this.#maxEntries) {
          const oldest = this.#entries.values().next().value as Entry;
          this.#entries.delete(oldest.hash);
          this.#evict(oldest);
        }
      },
      (err: unknown) => {
        if (this.#pending.get(hash) === waiters) this.#pending.delete(hash);
        for (const w of waiters) w.reject(err);
        waiters.clear();
      },
    );
  }

  #wait(waiters: Set<Waiter>, signal: AbortSignal | undefined): Promise<EmbeddingLease> {
    return new Promise<EmbeddingLease>((resolve, reject) => {
      const onAbort = () => {
        waiters.delete(waiter);
        reject(new AbortedError('The operation was aborted', { cause: signal?.reason }));
      };
      const waiter: Waiter = {
        resolve: (lease) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(lease);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #lease(entry: Entry): EmbeddingLease {
    entry.leases++;
    let released = false;
    return {
      embedding: entry.embedding,
      hash: entry.hash,
      release: () => {
        if (released) return;
        released = true;
        if (--entry.leases === 0 && entry.evicted) void entry.embedding.dispose();
      },
    };
  }

  #evict(entry: Entry): void {
    entry.evicted = true;
    if (entry.leases === 0) void entry.embedding.dispose();
  }

  #throwIfDisposed(): void {
    if (this.#disposed) throw new DisposedError('This embedding cache');
  }
}
