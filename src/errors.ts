/**
 * Errors raised by minigpt-node. Every error is a {@link MinigptError} with a stable `code`;
 * match on `code` rather than `instanceof` when two copies of the package may be loaded.
 * @module
 */

/** Stable error codes. New codes may be added; existing ones keep their meaning. */
export type ErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_MODEL_LOAD'
  | 'ERR_PROJECTOR_LOAD'
  | 'ERR_PROJECTOR_MISMATCH'
  | 'ERR_NO_PROJECTOR'
  | 'ERR_IMAGE_DECODE'
  | 'ERR_IMAGE_PREPROCESS'
  | 'ERR_ENCODE'
  | 'ERR_CONTEXT_OVERFLOW'
  | 'ERR_CONTEXT_CREATE'
  | 'ERR_DECODE'
  | 'ERR_TEMPLATE'
  | 'ERR_ABORTED'
  | 'ERR_DISPOSED'
  | 'ERR_BUSY'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_NO_BINARY'
  | 'ERR_BACKEND_LOAD'
  | 'ERR_BACKEND_LOST'
  | 'ERR_DOWNLOAD'
  | 'ERR_NATIVE';

/** Base class of every error this package throws or rejects with. */
export class MinigptError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'MinigptError';
  }
}

/** An argument or option has the wrong type, range or name. */
export class InvalidArgumentError extends MinigptError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARGUMENT', message, options);
    this.name = 'InvalidArgumentError';
  }
}

/** A model or projector file could not be loaded (missing, unreadable, not GGUF, unsupported). */
export class ModelLoadError extends MinigptError {
  constructor(code: 'ERR_MODEL_LOAD' | 'ERR_PROJECTOR_LOAD' | 'ERR_PROJECTOR_MISMATCH', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ModelLoadError';
  }
}

/** An image could not be decoded, preprocessed or encoded. */
export class ImageError extends MinigptError {
  constructor(code: 'ERR_IMAGE_DECODE' | 'ERR_IMAGE_PREPROCESS' | 'ERR_ENCODE' | 'ERR_NO_PROJECTOR', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ImageError';
  }
}

/** The prompt (or prompt plus answer) does not fit in the session's context. */
export class ContextOverflowError extends MinigptError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CONTEXT_OVERFLOW', message, options);
    this.name = 'ContextOverflowError';
  }
}

/** The operation was stopped by an AbortSignal; `cause` is the signal's reason. */
export class AbortedError extends MinigptError {
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super('ERR_ABORTED', message, options);
    this.name = 'AbortError';
  }
}

/**
 * A model file could not be downloaded or verified: an HTTP error (with `status` and `url`), a
 * hash mismatch, a full disk, or, offline, a file that is not in the cache. The message says
 * what to do.
 */
export class DownloadError extends MinigptError {
  /** The HTTP status, when a server answered. */
  readonly status?: number;
  /** The URL that failed, when there is one. */
  readonly url?: string;
  constructor(message: string, options?: { cause?: unknown; status?: number; url?: string }) {
    super('ERR_DOWNLOAD', message, options);
    this.name = 'DownloadError';
    if (options?.status !== undefined) this.status = options.status;
    if (options?.url !== undefined) this.url = options.url;
  }
}

/** The object was used after `dispose()`. */
export class DisposedError extends MinigptError {
  constructor(what: string) {
    super('ERR_DISPOSED', `${what} has been disposed; create a new one`);
    this.name = 'DisposedError';
  }
}

const classByCode: Partial<Record<ErrorCode, (message: string) => MinigptError>> = {
  ERR_INVALID_ARGUMENT: (m) => new InvalidArgumentError(m),
  ERR_MODEL_LOAD: (m) => new ModelLoadError('ERR_MODEL_LOAD', m),
  ERR_PROJECTOR_LOAD: (m) => new ModelLoadError('ERR_PROJECTOR_LOAD', m),
  ERR_PROJECTOR_MISMATCH: (m) => new ModelLoadError('ERR_PROJECTOR_MISMATCH', m),
  ERR_IMAGE_DECODE: (m) => new ImageError('ERR_IMAGE_DECODE', m),
  ERR_IMAGE_PREPROCESS: (m) => new ImageError('ERR_IMAGE_PREPROCESS', m),
  ERR_ENCODE: (m) => new ImageError('ERR_ENCODE', m),
  ERR_NO_PROJECTOR: (m) => new ImageError('ERR_NO_PROJECTOR', m),
  ERR_CONTEXT_OVERFLOW: (m) => new ContextOverflowError(m),
  ERR_ABORTED: (m) => new AbortedError(m),
};

/** @internal Makes the error for a code coming from native code. */
export function errorFromCode(code: string, message: string): MinigptError {
  const make = classByCode[code as ErrorCode];
  if (make) return make(message);
  if (code === 'ERR_DISPOSED') {
    const e = new MinigptError('ERR_DISPOSED', message);
    e.name = 'DisposedError';
    return e;
  }
  return new MinigptError((code as ErrorCode) ?? 'ERR_NATIVE', message);
}

/** @internal Rejects at once when the signal is already aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError('The operation was aborted', { cause: signal.reason });
}
