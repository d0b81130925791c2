/**
 * Quantizes a GGUF model with llama.cpp's own quantizer (`llama_model_quantize`, the code
 * behind `llama-quantize`), off the JS thread: the output is byte-identical to what
 * `llama-quantize in.gguf out.gguf TYPE` from the same llama.cpp writes.
 * @module
 */
import { rename, rm, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { AbortedError, InvalidArgumentError, ModelLoadError, throwIfAborted } from './errors.js';
import { checkTextModelFile } from './load-plan/index.js';
import { requiredFileSize } from './load-plan/loaded-files-check.js';
import { binding } from './native/binding.js';
import { checkKeys, invalid, optFunction, optSignal, optThreads, requireFilePath } from './validate.js';

/**
 * llama-quantize's types that need no importance matrix, with their `llama_ftype`
 * (tools/quantize/quantize.cpp QUANT_OPTIONS). `COPY` copies the tensors unchanged.
 */
export const QUANTIZE_TYPES = {
  Q1_0: 40, Q2_0: 41, Q4_0: 2, Q4_1: 3, MXFP4_MOE: 38, Q5_0: 8, Q5_1: 9, TQ1_0: 36, TQ2_0: 37,
  Q2_K: 10, IQ3_S: 26, IQ3_M: 27, Q3_K: 12, Q3_K_S: 11, Q3_K_M: 12, Q3_K_L: 13,
  IQ4_NL: 25, IQ4_XS: 30, Q4_K: 15, Q4_K_S: 14, Q4_K_M: 15, Q5_K: 17, Q5_K_S: 16, Q5_K_M: 17,
  Q6_K: 18, Q8_0: 7, F16: 1, BF16: 32, F32: 0, COPY: -1,
} as const;

/** A quantization type name (case does not matter). */
export type QuantizeType = keyof typeof QUANTIZE_TYPES;

// llama-quantize offers these too, but llama.cpp refuses them without an importance matrix
// (IQ3_XS for some tensors of most models: it picks IQ3_XXS for them).
const NEEDS_IMATRIX = ['IQ2_XXS', 'IQ2_XS', 'IQ2_S', 'IQ2_M', 'IQ1_S', 'IQ1_M', 'IQ3_XXS', 'IQ3_XS', 'Q2_K_S'];

/** Options of {@link quantize}. */
export interface QuantizeOptions {
  /** The GGUF to quantize (f32, f16 or bf16 weights; llama.cpp does not requantize). */
  input: string;
  /** The GGUF to write; written as `<output>.part` and renamed once complete. */
  output: string;
  /** One of {@link QUANTIZE_TYPES}, e.g. `Q4_K_M`, `Q8_0`, `IQ4_NL` (case-insensitive). */
  type: QuantizeType | Lowercase<QuantizeType>;
  /** Threads quantizing. Defaults to all the cores (`os.availableParallelism()`). */
  threads?: number;
  /** Called with the fraction done (0..1, increasing), at the start of each tensor and with 1 at the end. A throwing callback aborts. */
  onProgress?: (progress: number) => void;
  /** Stops the quantization at the next tensor; the partial file is removed and the promise rejects with `ERR_ABORTED`. */
  signal?: AbortSignal;
}

/** What {@link quantize} wrote. */
export interface QuantizeResult {
  /** The type, spelled as llama-quantize lists it. */
  type: QuantizeType;
  /** Size of the output file. */
  bytes: number;
}

/**
 * Quantize `input` into `output` as llama-quantize does, on a worker thread.
 *
 * Rejects with `InvalidArgumentError` (`ERR_INVALID_ARGUMENT`) for an unknown type (the
 * message lists the valid ones), a type that needs an importance matrix, or output equal to
 * input; `ModelLoadError` (`ERR_MODEL_LOAD`) when the input is not a GGUF llama.cpp can
 * quantize (with llama.cpp's reason); `AbortedError` (`ERR_ABORTED`) when `signal` aborts.
 *
 * @example
 * await quantize({ input: 'vicuna-7b-f16.gguf', output: 'vicuna-7b-Q4_K_M.gguf', type: 'Q4_K_M' });
 */
export async function quantize(options: QuantizeOptions): Promise<QuantizeResult> {
  const o = checkKeys(options, ['input', 'output', 'type', 'threads', 'onProgress', 'signal'], 'quantize options');
  const input = requireFilePath(o.input, 'input');
  const output = requireFilePath(o.output, 'output');
  const type = quantizeType(o.type);
  const threads = optThreads(o, 'threads', availableParallelism());
  const onProgress = optFunction<(p: number) => void>(o, 'onProgress');
  const signal = optSignal(o);
  if (resolve(input) === resolve(output)) throw new InvalidArgumentError(`output ${output} is the input; write the quantized model to another file`);
  throwIfAborted(signal);
  await checkInput(input);

  const addon = binding();
  const flag = new addon.AbortFlag();
  let callbackError: unknown;
  const report = (p: number): void => {
    if (callbackError !== undefined || !onProgress) return;
    try {
      onProgress(p);
    } catch (err) {
      callbackError = err;
      flag.abort();
    }
  };
  const onAbort = (): void => flag.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  const partial = `${output}.part`;
  try {
    await addon.quantize(input, partial, QUANTIZE_TYPES[type], threads, flag, onProgress ? report : undefined);
    // Progress calls cross threads asynchronously: let the last ones run before deciding.
    await new Promise((r) => setImmediate(r));
    if (callbackError !== undefined) throw new AbortedError('Quantization aborted: onProgress threw', { cause: callbackError });
    throwIfAborted(signal);
    await rename(partial, output);
    report(1);
    return { type, bytes: (await stat(output)).size };
  } catch (err) {
    await rm(partial, { force: true });
    if (callbackError !== undefined) throw new AbortedError('Quantization aborted: onProgress threw', { cause: callbackError });
    if (signal?.aborted) throw new AbortedError('The quantization was aborted', { cause: signal.reason });
    const e = err as NodeJS.ErrnoException;
    if (e?.syscall) throw new InvalidArgumentError(`cannot write ${output}: ${e.message}`, { cause: err });
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** The canonical name of a type given in any case; throws the error listing the valid names. */
export function quantizeType(value: unknown): QuantizeType {
  const names = Object.keys(QUANTIZE_TYPES) as QuantizeType[];
  if (typeof value === 'string') {
    const upper = value.toUpperCase();
    const found = names.find((n) => n === upper);
    if (found) return found;
    if (NEEDS_IMATRIX.includes(upper)) {
      throw new InvalidArgumentError(`${upper} needs an importance matrix (llama-imatrix), which quantize() does not take; use one of ${names.join(', ')}`);
    }
  }
  throw invalid(`one of ${names.join(', ')}`, 'type', value);
}

/**
 * The checks loadModel makes, before llama.cpp's quantizer reads the file: it aborts the
 * process on the same malformed headers its loader does.
 */
async function checkInput(path: string): Promise<void> {
  const header = await checkTextModelFile(path);
  const size = (await stat(path)).size;
  const required = requiredFileSize(header);
  if (size < required) throw new ModelLoadError('ERR_MODEL_LOAD', `${path} is truncated: its tensors need ${required} bytes, the file has ${size}. Copy or convert it again`);
}
