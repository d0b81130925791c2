/**
 * @internal
 * Writes the tensor data of a LLaMA conversion after its header. Tensors stored as they are
 * written (f16 to f16, ...) are copied in 16 MiB chunks through two reused buffers, the read
 * of one chunk overlapping the write of the last; Q/K go through two reused buffers for the
 * row permutation; only type conversions allocate per tensor. Memory stays bounded by the
 * largest converted tensor, and no fresh pages are faulted in per tensor on the common path.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { AbortedError, ModelLoadError } from '../errors.js';
import type { encodeGgufHeader } from '../gguf/write.js';
import { GgmlType } from '../gguf/types.js';
import { permuteRows, quietBf16NaNs, storedAsIs, tensorBytes, type PlannedTensor } from './llama-tensors.js';
import { readExactly } from './file-range.js';

const CHUNK = 16 << 20;

type Header = ReturnType<typeof encodeGgufHeader>;

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(bytes.length - done, 1 << 30), position + done);
    done += bytesWritten;
  }
}

async function readInto(fh: FileHandle, buf: Uint8Array, length: number, position: number, what: string): Promise<Uint8Array> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, Math.min(length - done, 1 << 30), position + done);
    if (bytesRead === 0) throw new ModelLoadError('ERR_MODEL_LOAD', `${what}: the file ends early (truncated download?)`);
    done += bytesRead;
  }
  return buf.subarray(0, length);
}

/** Reused, never-zeroed buffers that grow to the largest size asked of them. */
class Scratch {
  private readonly bufs: Uint8Array[] = [];
  get(slot: number, size: number): Uint8Array {
    if (!this.bufs[slot] || this.bufs[slot].length < size) this.bufs[slot] = Buffer.allocUnsafeSlow(size);
    return this.bufs[slot].subarray(0, size);
  }
}

/** Write the header and every tensor of `plan` into `path`. */
export async function writeLlamaGguf(
  path: string, header: Header, plan: PlannedTensor[],
  onProgress: ((done: number, total: number) => void) | undefined, signal: AbortSignal | undefined,
): Promise<void> {
  const total = header.sizes.reduce((a, b) => a + b, 0);
  const inputs = new Map<string, FileHandle>();
  const input = async (p: string): Promise<FileHandle> => {
    let fh = inputs.get(p);
    if (!fh) inputs.set(p, (fh = await open(p, 'r')));
    return fh;
  };
  const scratch = new Scratch();
  const out = await open(path, 'w');
  try {
    // Zeros up to the data section, then each tensor at its offset, padded.
    const head = new Uint8Array(header.dataStart);
    head.set(header.bytes);
    await writeAll(out, head, 0);
    let done = 0;
    onProgress?.(0, total);
    for (const [i, t] of plan.entries()) {
      if (signal?.aborted) throw new AbortedError('The conversion was aborted', { cause: signal.reason });
      const at = header.dataStart + header.offsets[i];
      const size = header.sizes[i];
      const what = `${t.source.file}: tensor "${t.source.name}"`;
      const range = storedAsIs(t) && t.source.rawFileRange ? await t.source.rawFileRange() : undefined;
      if (range && t.permuteHeads === undefined) {
        const fh = await input(range.path);
        let pending = readInto(fh, scratch.get(0, Math.min(CHUNK, size)), Math.min(CHUNK, size), range.offset, what);
        for (let off = 0, k = 0; off < size; off += CHUNK, k++) {
          const chunk = await pending;
          const next = off + CHUNK;
          if (next < size) {
            const n = Math.min(CHUNK, size - next);
            pending = readInto(fh, scratch.get((k + 1) % 2, n), n, range.offset + next, what);
            pending.catch(() => {}); // awaited on the next turn; a failed write must not leave it unhandled
          }
          if (t.type === GgmlType.BF16) quietBf16NaNs(new Uint16Array(chunk.buffer, chunk.byteOffset, chunk.length / 2));
          await writeAll(out, chunk, at + off);
          done += chunk.length;
          onProgress?.(done, total);
        }
      } else {
        let bytes: Uint8Array;
        if (range) {
          const raw = await readInto(await input(range.path), scratch.get(0, size), size, range.offset, what);
          if (t.type === GgmlType.BF16) quietBf16NaNs(new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2));
          const rows = t.source.shape[0];
          bytes = permuteRows(raw, rows, size / rows, t.permuteHeads!, what, scratch.get(1, size));
        } else {
          bytes = await tensorBytes(t);
        }
        if (bytes.length !== size) throw new ModelLoadError('ERR_MODEL_LOAD', `${what}: produced ${bytes.length} bytes, expected ${size}`);
        await writeAll(out, bytes, at);
        done += size;
        onProgress?.(done, total);
      }
      const pad = (header.alignment - (size % header.alignment)) % header.alignment;
      if (pad > 0) await writeAll(out, new Uint8Array(pad), at + size);
    }
  } finally {
    await out.close();
    for (const fh of inputs.values()) await fh.close();
  }
}

