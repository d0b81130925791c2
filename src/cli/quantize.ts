/**
 * @internal
 * `minigpt quantize in.gguf out.gguf TYPE`: llama.cpp's own quantizer, as llama-quantize.
 */
import { QUANTIZE_TYPES, type QuantizeType } from '../quantize.js';
import { listOf, numberFlag, parseCommand, UsageError, type OptionSpec } from './args.js';

export const quantizeUsage = `  minigpt quantize [options] <in.gguf> <out.gguf> <type>   quantize like llama-quantize
      type: ${Object.keys(QUANTIZE_TYPES).join(', ')}
      (the output is byte for byte what llama-quantize writes; types needing an imatrix are not offered)
      -t, --threads <n>      threads (default: all cores)
`;

const options: Record<string, OptionSpec> = {
  threads: { type: 'string', short: 't' },
};

/** Runs the subcommand; returns the exit code. */
export async function quantizeCommand(argv: string[]): Promise<number> {
  const { values, positionals, help } = parseCommand('quantize', argv, options);
  if (help) {
    process.stdout.write(`Usage:\n${quantizeUsage}`);
    return 0;
  }
  if (positionals.length !== 3) {
    const missing = ['<in.gguf>', '<out.gguf>', '<type>'].slice(positionals.length);
    if (missing.length > 0) throw new UsageError('quantize', `missing ${listOf(missing)}`);
    throw new UsageError('quantize', `expected <in.gguf> <out.gguf> <type>, got ${positionals.length} arguments`);
  }
  const [input, output, typeName] = positionals;
  const type = Object.keys(QUANTIZE_TYPES).find((n) => n === typeName.toUpperCase()) as QuantizeType | undefined;
  if (!type) throw new UsageError('quantize', `unknown type '${typeName}'; the types are ${listOf(Object.keys(QUANTIZE_TYPES), 'or')}`);
  const threads = numberFlag('quantize', 'threads', values.threads, { integer: true, min: 1, max: 1024 });

  const [{ withTaskProgress }, { quantize }] = await Promise.all([import('./task-progress.js'), import('../quantize.js')]);
  const t0 = Date.now();
  const result = await withTaskProgress(`quantizing to ${type} [{bar}] {percentage}%`, (signal, report) =>
    quantize({ input, output, type, threads, signal, onProgress: (p) => report(Math.round(p * 100), 100) }));
  process.stderr.write(`wrote ${output}: ${result.type}, ${(result.bytes / 2 ** 20).toFixed(1)} MiB in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  return 0;
}
