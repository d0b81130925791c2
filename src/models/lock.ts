/**
 * One downloader per file across processes: a lock file created with O_EXCL holding our pid.
 * A lock whose process is gone (same host), or that its holder stopped refreshing, is taken
 * over; otherwise we wait, honouring the signal.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { link, open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { AbortedError, throwIfAborted } from '../errors.js';

/** The holder touches its lock this often; one untouched for STALE_MS is abandoned. */
const REFRESH_MS = 5_000;
const STALE_MS = 60_000;

export interface Lock { release(): Promise<void> }

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortedError('Download aborted', { cause: signal.reason }));
    const done = () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortedError('Download aborted', { cause: signal!.reason }));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function isStale(path: string, content: string): Promise<boolean> {
  const [pid, host] = content.split('\n');
  const info = await stat(path).catch(() => undefined);
  if (!info) return false;  // gone already: just try again
  if (Date.now() - info.mtimeMs > STALE_MS) return true;
  if (host === hostname() && pid && /^\d+$/.test(pid)) return !alive(Number(pid));
  return false;
}

/**
 * Takes the lock at `path`; `onWait` is called once if another process holds it.
 * @throws AbortedError when `signal` aborts while waiting
 */
export async function acquireLock(path: string, signal?: AbortSignal, onWait?: () => void): Promise<Lock> {
  const content = `${process.pid}\n${hostname()}\n${randomBytes(8).toString('hex')}\n`;
  let waited = false;
  for (;;) {
    throwIfAborted(signal);
    try {
      const handle = await open(path, 'wx');
      try {
        await handle.writeFile(content);
      } finally {
        await handle.close();
      }
      const timer = setInterval(() => {
        const now = new Date();
        utimes(path, now, now).catch(() => {});
      }, REFRESH_MS);
      timer.unref();
      return {
        async release() {
          clearInterval(timer);
          // Only our own lock: after a takeover the file may be someone else's.
          if ((await readFile(path, 'utf8').catch(() => '')) === content) await unlink(path).catch(() => {});
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const held = await readFile(path, 'utf8').catch(() => '');
    if (held.endsWith('\n') && (await isStale(path, held))) {
      // Rename is atomic: of several processes taking over, one moves the stale file; if what
      // it moved is not what it judged stale, a new holder got in between: put that back.
      const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
      if (await rename(path, aside).then(() => true, () => false)) {
        const moved = await readFile(aside, 'utf8').catch(() => '');
        if (moved !== held) await link(aside, path).catch(() => {});
        await unlink(aside).catch(() => {});
      }
      continue;
    }
    if (!waited) {
      waited = true;
      onWait?.();
    }
    await sleep(100 + Math.random() * 150, signal);
  }
}
