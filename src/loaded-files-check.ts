/**
 * @internal
 * The model and projector files are checked before llama.cpp opens them, but with mmap the
 * weights are read from the file on first use, long after: a file cut short in between would
 * kill the process with SIGBUS then. Looking again once the load is done turns a file
 * truncated during the load into an error instead (it cannot help with one truncated later).
 */
import { stat } from 'node:fs/promises';
import { ModelLoadError } from './errors.js';
import type { GgufHeader } from './gguf/types.js';

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
export async function checkLoadedFiles(
  native: { dispose(): void },
  modelPath: string,
  modelHeader: GgufHeader,
  projectorPath?: string,
  projectorHeader?: GgufHeader,
): Promise<void> {
  const files: { path: string; header: GgufHeader; what: string; code: 'ERR_MODEL_LOAD' | 'ERR_PROJECTOR_LOAD' }[] = [
    { path: modelPath, header: modelHeader, what: 'Model', code: 'ERR_MODEL_LOAD' },
  ];
  if (projectorPath !== undefined && projectorHeader !== undefined) {
    files.push({ path: projectorPath, header: projectorHeader, what: 'Projector', code: 'ERR_PROJECTOR_LOAD' });
  }
  for (const f of files) {
    const now = await stat(f.path).catch(() => undefined);
    if (now === undefined || !now.isFile()) continue;
    if (f.header.fileId !== undefined && f.header.fileId !== `${now.dev}:${now.ino}`) continue;
    const required = requiredFileSize(f.header);
    if (now.size >= required) continue;
    native.dispose();
    throw new ModelLoadError(
      f.code,
      `${f.what} file ${f.path} shrank to ${now.size} bytes while it was being loaded, but its tensors need ${required}: ` +
        'it was truncated or is being rewritten. Wait until the file is complete (or copy it again), then load it again.',
    );
  }
}
