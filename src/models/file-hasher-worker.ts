/**
 * @internal
 * The thread of file-hasher.ts: reads a file's bytes in order from where it stopped (from the
 * page cache, just after they were written) and keeps their sha256.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { HasherReply, HasherRequest } from './file-hasher.js';

const READ_BYTES = 4 << 20;
const path: string = workerData.path;
const buffer = Buffer.allocUnsafe(READ_BYTES);
let hash: Hash = createHash('sha256');
let hashed = 0;

function hashTo(end: number): void {
  if (end <= hashed) return;
  const fd = openSync(path, 'r');
  try {
    while (hashed < end) {
      const bytes = readSync(fd, buffer, 0, Math.min(READ_BYTES, end - hashed), hashed);
      if (bytes === 0) throw Object.assign(new Error(`${path} ended at byte ${hashed} while ${end} were expected`), { code: 'ERR_FILE_SHORT' });
      hash.update(buffer.subarray(0, bytes));
      hashed += bytes;
    }
  } finally {
    closeSync(fd);
  }
}

parentPort!.on('message', (request: HasherRequest) => {
  let reply: HasherReply;
  try {
    if (request.kind === 'reset') {
      hash = createHash('sha256');
      hashed = 0;
      reply = { id: request.id, hashed };
    } else if (request.kind === 'hash') {
      hashTo(request.end);
      reply = { id: request.id, hashed };
    } else {
      reply = { id: request.id, hashed, sha256: hash.copy().digest('hex') };
    }
  } catch (err) {
    reply = { id: request.id, hashed, error: { message: (err as Error).message, code: (err as NodeJS.ErrnoException).code } };
  }
  parentPort!.postMessage(reply);
});
