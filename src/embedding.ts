/**
 * An encoded image, reusable across prompts and sessions of the model that made it.
 * @module
 */
import { DisposedError } from './errors.js';
import type { NativeEmbedding } from './native/binding.js';

/** @internal */
export const nativeOf = Symbol('minigpt.native');
/** @internal */
export const retain = Symbol('minigpt.retain');

/**
 * The embeddings a projector made from one picture. Encode once, then put it in as many
 * prompts as you like without encoding again. Sessions that used it keep it alive until they
 * are disposed, even if you dispose it first.
 */
export class ImageEmbedding {
  #native: NativeEmbedding | undefined;
  #users = 0;
  #disposed = false;
  /** @internal */
  readonly owner: object;

  /** @internal */
  constructor(native: NativeEmbedding, owner: object) {
    this.#native = native;
    this.owner = owner;
  }

  /** Sequence positions the image takes in a prompt (embedding rows plus any wrapping tokens). */
  get nTokens(): number {
    return this.#public().nTokens;
  }

  /** Width of each embedding row: the language model's input embedding size. */
  get nEmbd(): number {
    return this.#public().nEmbd;
  }

  /** True after `dispose()`. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** A copy of the embedding rows, `rows * nEmbd` floats, in sequence order. */
  toFloat32Array(): Float32Array {
    return this.#public().toFloat32Array();
  }

  /** Frees the embedding (at once, or when the last session using it lets go). Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#users === 0) this.#free();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  /** @internal The native handle, for sessions. */
  get [nativeOf](): NativeEmbedding {
    return this.#live();
  }

  /** @internal A session keeps the image until it calls the returned release function. */
  [retain](): () => void {
    this.#public();
    this.#users++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.#users === 0 && this.#disposed) this.#free();
    };
  }

  #public(): NativeEmbedding {
    if (this.#disposed) throw new DisposedError('This image embedding');
    return this.#live();
  }

  // Sessions that retained the image may still use it after the user disposed it.
  #live(): NativeEmbedding {
    if (this.#disposed && this.#users === 0) throw new DisposedError('This image embedding');
    if (!this.#native) throw new DisposedError('This image embedding');
    return this.#native;
  }

  #free(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }
}
