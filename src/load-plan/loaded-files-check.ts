/**
 * @internal
 * The model and projector files are checked before llama.cpp opens them, but with mmap the
 * weights are read from the file on first use, long after: a file cut short in between would
 * kill the process with SIGBUS then. Looking again once the load is done turns a file
 * truncated during the load into an error instead (it cannot help with one truncated later).
 */
import { stat } from 'node:fs/promises';
import { ModelLoadError } from '../errors.js';
import type { GgufHeader } from '../gguf/types.js';
import type { PlannedFile } from './plan.js';

/** Bytes the file must hold: up to the end of its last tensor's data. */
export function requiredFileSize(h: GgufHeader): number {
  let end = 0;
  for (const t of h.tensors) end = Math.max(end, h.dataOffset + Number(t.offset) + t.byteSize);
  return end;
}

/**
 * Rejects with a {@link ModelLoadError}, after disposing `native`, when the model or projector
 * file is now shorter than its tensors need. A file that is gone or was replaced under its
 * name is not checked: the mapping still holds the old file, which stays whole until unmapped.
 */
export async function checkLoadedFiles(native: { dispose(): void }, files: PlannedFile[]): Promise<void> {
  for (const f of files) {
    const now = await stat(f.path).catch(() => undefined);
    if (now === undefined || !now.isFile()) continue;
    if (f.fileId !== undefined && f.fileId !== `${now.dev}:${now.ino}`) continue;
    if (now.size >= f.requiredSize) continue;
    native.dispose();
    throw new ModelLoadError(
      f.code,
      `${f.what} file ${f.path} shrank to ${now.size} bytes while it was being loaded, but its tensors need ${f.requiredSize}: ` +
        'it was truncated or is being rewritten. Wait until the file is complete (or copy it again), then load it again.',
    );
  }
}
