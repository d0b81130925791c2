/**
 * Downloads one file into the cache: streamed to `<file>.part` (resumed with Range after an
 * interruption), hashed as it is written, checked against the expected sha256 and size, and
 * only then renamed into place. One process at a time per file (lock.ts).
 * @module
 */
import { mkdir, open, rename, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AbortedError, DownloadError, throwIfAborted } from '../errors.js';
import { cachedEntry, lockPath, metaPath, partPath, partStatePath, readJson, writeJson, type EntryMeta } from './cache.js';
import { NetworkError, networkError, redact, request, statusError, type FailureContext, type HttpContext } from './http.js';
import { FileHasher } from './file-hasher.js';
import { acquireLock, sleep } from './lock.js';
import { ProgressMeter, type DownloadProgress } from './progress.js';
import { backoff, isRetryable, RETRIES } from './retry.js';

export interface DownloadJob {
  /** Canonical URI, recorded in the metadata. */
  uri: string;
  /** Where to GET it. */
  url: URL;
  /** The final path in the cache. */
  dest: string;
  size?: number;
  sha256?: string;
  etag?: string;
  revision?: string;
  commit?: string;
  failure?: FailureContext;
}

export interface DownloadOptions {
  http: HttpContext;
  signal?: AbortSignal;
  onProgress?: (p: DownloadProgress) => void;
  /** Called once when another process holds the file's lock and we wait for it. */
  onWait?: () => void;
}

/** What a part file was started from: resuming a part of another version would mix two files. */
interface PartState { uri: string; url: string; size?: number; sha256?: string; etag?: string; validator?: string }

/** A connection that delivers nothing for this long is dropped and tried again. */
const STALL_MS = 30_000;

function sameSource(state: PartState | undefined, job: DownloadJob): boolean {
  if (!state || state.uri !== job.uri) return false;
  const differs = (a: unknown, b: unknown) => a !== undefined && b !== undefined && a !== b;
  return !differs(state.size, job.size) && !differs(state.sha256, job.sha256) && !differs(state.etag, job.etag);
}

/**
 * Writes a body into the part at a position, one write in flight while the next chunks
 * gather (so writes grow to what the disk keeps up with), and has each chunk hashed once it is on
 * disk, so the hash always covers exactly the bytes written (whatever happens to the connection).
 */
class PartWriter {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #inflight: Promise<void> | undefined;
  #error: unknown;
  #syncedTo: number;
  #syncing: Promise<void> = Promise.resolve();

  constructor(
    private readonly fh: FileHandle,
    public position: number,
    private readonly hasher: FileHasher,
    private readonly onWritten: (position: number) => void,
  ) {
    this.#syncedTo = position;
  }

  /** Takes a chunk: written at once when no write is in flight, else with the next batch; waits only when much is waiting. */
  async push(chunk: Uint8Array): Promise<void> {
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#inflight && this.#pendingBytes >= WRITE_MAX) await this.#inflight;
    if (this.#error !== undefined) throw this.#error;
    if (!this.#inflight) this.#start();
  }

  /** Writes what is left; rejects with the first write error. */
  async flush(): Promise<void> {
    while (this.#inflight || this.#pendingBytes > 0) {
      if (this.#inflight) await this.#inflight;
      if (this.#error !== undefined) throw this.#error;
      if (this.#pendingBytes > 0) this.#start();
    }
  }

  /** Once the write in flight (if any) has landed: `position` is then final. */
  async settled(): Promise<number> {
    await this.#inflight;
    return this.position;
  }

  #start(): void {
    const buffers = this.#pending;
    const bytes = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#inflight = this.#write(buffers, bytes).then(
      () => {
        this.#inflight = undefined;
      },
      (err) => {
        this.#error = err;
        this.#inflight = undefined;
      },
    );
  }

  async #write(buffers: Uint8Array[], bytes: number): Promise<void> {
    let { bytesWritten } = await this.fh.writev(buffers, this.position);
    if (bytesWritten < bytes) {
      // A short write (rare on files): the rest one piece at a time.
      const all = Buffer.concat(buffers);
      while (bytesWritten < bytes) bytesWritten += (await this.fh.write(all, bytesWritten, bytes - bytesWritten, this.position + bytesWritten)).bytesWritten;
    }
    this.position += bytes;
    this.hasher.advance(this.position);
    if (this.position - this.#syncedTo >= SYNC_BEHIND) {
      // Written back while the download goes on, so the fsync before the rename has little left.
      this.#syncedTo = this.position;
      this.#syncing = Promise.all([this.#syncing, this.fh.datasync()]).then(
        () => {},
        (err) => {
          this.#error ??= err;
        },
      );
    }
    this.onWritten(this.position);
  }

  /** Every write flushed to the page cache and from there to the disk. */
  async sync(): Promise<void> {
    await this.flush();
    await this.#syncing;
    if (this.#error !== undefined) throw this.#error;
    await this.fh.sync();
  }
}

/** How much is written between two write-backs started behind the download. */
const SYNC_BEHIND = 64 << 20;

/** Reading pauses while this much waits for the write in flight. */
const WRITE_MAX = 16 << 20;

function strongValidator(headers: Headers): string | undefined {
  const etag = headers.get('etag');
  if (etag && !etag.startsWith('W/')) return etag;
  return headers.get('last-modified') ?? undefined;
}

function parseContentRange(value: string | null): { start: number; total?: number } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value ?? '');
  if (!m) return undefined;
  return { start: Number(m[1]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

async function removePart(dest: string): Promise<void> {
  await unlink(partPath(dest)).catch(() => {});
  await unlink(partStatePath(dest)).catch(() => {});
}

function diskFull(dest: string, err: unknown, needed?: number): DownloadError {
  return new DownloadError(
    `Disk full while downloading ${dest}${needed !== undefined ? ` (${mib(needed)} still to write)` : ''}: free space in ${dirname(dest)} (or set MINIGPT_MODELS_DIR to another disk) and pull again`,
    { cause: err },
  );
}

/**
 * Makes `job.dest` a complete, verified copy of `job.url`, or rejects leaving no file at
 * `job.dest` (a `.part` stays for the next try unless its content is known to be wrong).
 */
export async function downloadFile(job: DownloadJob, options: DownloadOptions): Promise<EntryMeta> {
  const { signal } = options;
  throwIfAborted(signal);
  await mkdir(dirname(job.dest), { recursive: true });
  const lock = await acquireLock(lockPath(job.dest), signal, options.onWait);
  try {
    // Whoever held the lock may have finished the file meanwhile.
    const done = await cachedEntry(job.dest, { size: job.size, sha256: job.sha256 });
    if (done) return done;
    return await fetchToCache(job, options);
  } finally {
    await lock.release();
  }
}

async function fetchToCache(job: DownloadJob, options: DownloadOptions): Promise<EntryMeta> {
  const { signal } = options;
  const part = partPath(job.dest);
  let state = await readJson<PartState>(partStatePath(job.dest));
  let offset = 0;
  const onDisk = await stat(part).catch(() => undefined);
  if (onDisk?.isFile() && sameSource(state, job) && (job.size === undefined || onDisk.size <= job.size)) offset = onDisk.size;
  else state = undefined;
  if (!state) {
    state = { uri: job.uri, url: job.url.href, size: job.size, sha256: job.sha256, etag: job.etag };
    await writeJson(partStatePath(job.dest), state);
  }
  if (job.size !== undefined) {
    const fs = await statfs(dirname(job.dest)).catch(() => undefined);
    const free = fs ? fs.bavail * fs.bsize : Infinity;
    if (free < job.size - offset) {
      throw new DownloadError(`Not enough disk space for ${job.dest}: it needs ${mib(job.size - offset)}, ${mib(free)} are free in ${dirname(job.dest)}. Free space or set MINIGPT_MODELS_DIR to another disk`);
    }
  }
  const hasher = new FileHasher(part);
  try {
    return await fetchIntoPart(job, options, { offset, state, hasher });
  } finally {
    await hasher.close();
  }
}

/** Waits for `promise`, or rejects with AbortedError as soon as `signal` aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortedError('Download aborted', { cause: signal.reason }));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

async function fetchIntoPart(
  job: DownloadJob,
  options: DownloadOptions,
  resume: { offset: number; state: PartState; hasher: FileHasher },
): Promise<EntryMeta> {
  const { signal } = options;
  const { hasher } = resume;
  const part = partPath(job.dest);
  let { offset, state } = resume;
  // What a resumed part already holds is hashed while the request goes out.
  const resumeHashed = abortable(hasher.hashTo(offset), signal);
  resumeHashed.catch(() => {});
  const meter = new ProgressMeter(job.dest, job.uri, offset, job.size, options.onProgress);
  let progressError: unknown;
  let total = job.size;
  let failures = 0;

  const restart = async () => {
    offset = 0;
    await hasher.reset();
    state = { uri: job.uri, url: job.url.href, size: job.size, sha256: job.sha256, etag: job.etag };
    await writeJson(partStatePath(job.dest), state);
  };

  for (;;) {
    throwIfAborted(signal);
    const attempt = new AbortController();
    const onAbort = () => attempt.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let stalled = false;
    let stallTimer: NodeJS.Timeout | undefined;
    const armStall = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        stalled = true;
        attempt.abort();
      }, STALL_MS);
    };
    const startOffset = offset;
    let writer: PartWriter | undefined;
    let fh: FileHandle | undefined;
    try {
      armStall();
      const headers: Record<string, string> = { 'accept-encoding': 'identity' };
      if (offset > 0) {
        headers.range = `bytes=${offset}-`;
        if (state.validator) headers['if-range'] = state.validator;
      }
      const { response, url } = await request(options.http, job.url, { method: 'GET', headers, signal: attempt.signal });
      if (response.status === 416 && offset > 0) {
        await response.body?.cancel().catch(() => {});
        if (offset === job.size) break;  // the part was complete: only the rename was missing
        await restart();
        throw new NetworkError(`${redact(url)} refused to resume at byte ${offset}; starting over`, { url: redact(url) });
      }
      if (response.status !== 200 && response.status !== 206) {
        await response.body?.cancel().catch(() => {});
        throw statusError(response.status, url, response.headers, job.failure);
      }
      if (response.status === 206) {
        const range = parseContentRange(response.headers.get('content-range'));
        if (!range || range.start !== offset) {
          await response.body?.cancel().catch(() => {});
          await restart();
          throw new NetworkError(`${redact(url)} answered a Range request with bytes from ${range?.start ?? '?'} instead of ${startOffset}; starting over`, { url: redact(url) });
        }
        total = range.total ?? total;
      } else {
        // 200 to a Range request: the server ignored it (or If-Range found the file changed).
        if (offset > 0) await restart();
        const length = response.headers.get('content-length');
        if (length !== null && /^\d+$/.test(length)) total = Number(length);
      }
      if (job.size !== undefined && total !== undefined && total !== job.size) {
        await response.body?.cancel().catch(() => {});
        await removePart(job.dest);
        throw new DownloadError(`${redact(url)} is ${total} bytes, but ${job.size} were expected for ${job.uri}: the file on the server is not the one asked for. Pull again to refresh its size, or check the URI's revision`, { url: redact(url) });
      }
      meter.setTotal(total);
      if (offset === 0) {
        state.validator = strongValidator(response.headers);
        await writeJson(partStatePath(job.dest), state);
      }
      if (!response.body) throw new NetworkError(`${redact(url)} sent no body`, { url: redact(url) });
      // Before the part is opened (and, when new, created): a part on disk always grows at once.
      await resumeHashed;
      fh = await open(part, offset > 0 ? 'r+' : 'w');
      writer = new PartWriter(fh, offset, hasher, (position) => {
        armStall();
        try {
          meter.set(position);
        } catch (err) {
          progressError = err;
          attempt.abort();
        }
      });
      const reader = response.body.getReader();
      try {
        for (;;) {
          let chunk: Awaited<ReturnType<typeof reader.read>>;
          try {
            chunk = await reader.read();
          } catch (err) {
            // What arrived before the connection failed is a good prefix: keep it for the resume.
            await writer.flush().catch(() => {});
            throw err;
          }
          if (chunk.done) break;
          await writer.push(chunk.value);
        }
        await writer.flush();
      } finally {
        reader.cancel().catch(() => {});
      }
      offset = writer.position;
      if (total !== undefined && offset < total) throw new NetworkError(`The connection to ${url.host} closed at byte ${offset} of ${total}`, { url: redact(url) });
      if (total !== undefined && offset > total) {
        await removePart(job.dest);
        throw new DownloadError(`${redact(url)} sent ${offset} bytes for a ${total}-byte file; pull again`, { url: redact(url) });
      }
      await fh.truncate(offset);
      // On disk before it is renamed into place: after a crash the cache holds whole files only.
      await writer.sync();
      break;
    } catch (err) {
      if (writer) offset = await writer.settled();
      if (progressError !== undefined) throw new AbortedError('Download aborted: onProgress threw', { cause: progressError });
      if (signal?.aborted) throw new AbortedError('Download aborted', { cause: signal.reason });
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        await fh?.close().catch(() => {});
        fh = undefined;
        await removePart(job.dest);
        throw diskFull(job.dest, err, total !== undefined ? total - offset : undefined);
      }
      const failure = stalled
        ? new NetworkError(`No data from ${job.url.host} for ${STALL_MS / 1000} s`, { url: redact(job.url), cause: err })
        : networkError(err, job.url, undefined);
      if (!isRetryable(failure)) throw failure;
      // A try that moved the download forward starts the count again.
      failures = offset > startOffset ? 1 : failures + 1;
      if (failures > RETRIES) {
        failure.message += ` (after ${RETRIES + 1} tries; the part is kept at ${part}: pull again to resume)`;
        throw failure;
      }
      await sleep(backoff(failures), signal);
    } finally {
      clearTimeout(stallTimer);
      signal?.removeEventListener('abort', onAbort);
      await fh?.close().catch(() => {});
    }
  }

  const sha256 = await abortable(hasher.digest(), signal);
  if (job.size !== undefined && offset !== job.size) {
    await removePart(job.dest);
    throw new DownloadError(`${job.uri}: got ${offset} bytes, expected ${job.size}; pull again`, { url: redact(job.url) });
  }
  if (job.sha256 !== undefined && sha256 !== job.sha256) {
    await removePart(job.dest);
    throw new DownloadError(
      `${job.uri}: sha256 mismatch: expected ${job.sha256}, got ${sha256}. The download was corrupted or the file changed on the server; nothing was kept. Pull again`,
      { url: redact(job.url) },
    );
  }
  meter.set(offset, true);
  const meta: EntryMeta = {
    uri: job.uri,
    url: redact(job.url),
    size: offset,
    sha256,
    etag: job.etag,
    revision: job.revision,
    commit: job.commit,
    downloadedAt: new Date().toISOString(),
  };
  await rename(part, job.dest);
  await writeJson(metaPath(job.dest), meta);
  await unlink(partStatePath(job.dest)).catch(() => {});
  return meta;
}
