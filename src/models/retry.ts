/**
 * Retries with exponential backoff for what may work on the next try (connection failures,
 * 408, 429, 5xx); never for other 4xx answers or a hash mismatch.
 * @module
 */
import { DownloadError } from '../errors.js';
import { NetworkError, retryableStatus } from './http.js';
import { sleep } from './lock.js';

/** Tries after the first, for a step that makes no progress. */
export const RETRIES = 5;
const BASE_MS = 250;
const MAX_MS = 8_000;

export function isRetryable(err: unknown): boolean {
  if (err instanceof NetworkError) return true;
  return err instanceof DownloadError && err.status !== undefined && retryableStatus(err.status);
}

/** The wait before try `n` (1-based), with jitter so that many clients do not retry together. */
export function backoff(n: number): number {
  const ms = Math.min(MAX_MS, BASE_MS * 2 ** (n - 1));
  return ms / 2 + Math.random() * (ms / 2);
}

/** Runs `step` until it succeeds, fails for good, or fails RETRIES + 1 times. */
export async function withRetries<T>(step: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await step();
    } catch (err) {
      if (!isRetryable(err) || n > RETRIES || signal?.aborted) throw err;
      await sleep(backoff(n), signal);
    }
  }
}
