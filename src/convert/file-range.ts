/**
 * @internal
 * Positional reads of part of a file into a fresh, aligned buffer.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { MinigptError, ModelLoadError } from '../errors.js';

/** Read exactly `length` bytes at `position` from an open handle; fails on a short file. */
export async function readExactly(fh: FileHandle, position: number, length: number, what: string): Promise<Uint8Array> {
  // FileHandle.read takes a negative position as "the current position" and silently
  // wraps one past Number.MAX_SAFE_INTEGER, so a hostile offset would read other bytes.
  if (!isFileOffset(position) || !isFileOffset(length) || !isFileOffset(position + length)) {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${what}: a read of ${length} bytes at offset ${position} lies outside any file; ` +
      'the file is damaged or not what it claims to be');
  }
  // A fresh Uint8Array starts at offset 0 of its own ArrayBuffer, so typed views of
  // any element size over it are aligned (Buffer.alloc may hand out pooled slices).
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    // Node caps one read at 2 GiB; loop in 1 GiB pieces.
    const n = Math.min(length - done, 1 << 30);
    const { bytesRead } = await fh.read(out, done, n, position + done);
    if (bytesRead === 0) throw new ModelLoadError('ERR_MODEL_LOAD', `${what}: the file ends early (truncated download?)`);
    done += bytesRead;
  }
  return out;
}

function isFileOffset(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** Open `path`, read `length` bytes at `position`, close. */
export async function readFileRange(path: string, position: number, length: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    return await readExactly(fh, position, length, path);
  } finally {
    await fh.close();
  }
}

/** Turns fs errors (ENOENT, EACCES, EISDIR) into the package's typed error, naming the file. */
export function loadError(path: string, err: unknown): Error {
  if (err instanceof MinigptError) return err;
  const e = err as NodeJS.ErrnoException;
  const why = e?.code === 'ENOENT' ? 'no such file or directory' : e?.message ?? String(err);
  return new ModelLoadError('ERR_MODEL_LOAD', `cannot read ${path}: ${why}`, { cause: err });
}
