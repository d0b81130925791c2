/**
 * @internal
 * Converters write next to their target, `<output>.part`, and rename at the end, so a failed
 * or interrupted run never leaves a truncated file under the real name (and a re-run never
 * mistakes one for done).
 */
import { rename, rm } from 'node:fs/promises';
import { InvalidArgumentError, MinigptError, ModelLoadError } from '../errors.js';

/**
 * Runs `write(partial)` and renames the result onto `output`. Errors of ours pass through; a
 * failed write or rename names `output`; anything else is a failed conversion.
 */
export async function writeAtomically<T>(output: string, write: (partial: string) => Promise<T>): Promise<T> {
  const partial = `${output}.part`;
  try {
    const result = await write(partial);
    await rename(partial, output);
    return result;
  } catch (err) {
    await rm(partial, { force: true });
    if (err instanceof MinigptError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e?.syscall) throw new InvalidArgumentError(`cannot write ${output}: ${e.message}`, { cause: err });
    throw new ModelLoadError('ERR_MODEL_LOAD', `conversion failed: ${e?.message ?? String(err)}`, { cause: err });
  }
}
