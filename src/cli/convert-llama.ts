/**
 * @internal
 * `minigpt convert --llama`: writes a llama.cpp GGUF from a Hugging Face LLaMA / Vicuna folder
 * (what `convert_hf_to_gguf.py` writes), or re-wraps an old GGML (`ggjt` v3) file as GGUF
 * (what `convert_llama_ggml_to_gguf.py` writes).
 */
import { stat } from 'node:fs/promises';
import type { LlamaOutType } from '../convert/llama.js';
import { choiceFlag, listOf, numberFlag, parseCommand, UsageError, type OptionSpec } from './args.js';

export const convertLlamaUsage = `  minigpt convert --llama -o <out.gguf> [options] <folder | model.bin>   write a LLaMA / Vicuna GGUF
      folder: a Hugging Face checkpoint folder (config.json, model*.safetensors or
      pytorch_model*.bin, tokenizer.model); the GGUF equals llama.cpp's convert_hf_to_gguf.py's
      model.bin: an old GGML file (ggjt v3 and older, e.g. minigpt4.cpp's Vicuna files),
      re-wrapped as llama.cpp's convert_llama_ggml_to_gguf.py does
      -o, --output <file>    the GGUF to write
      --type <t>             folder: f32, f16 (default) or bf16 for the matrices (norms stay f32)
      --name <text>          general.name (default: from config.json, the folder or file name)
      --context-length <n>   GGML file: llama.context_length (default 2048; 4096 for Llama 2)
      --eps <e>              GGML file: RMS norm epsilon (default 5e-6; LLaMA 1 used 1e-6, Llama 2 1e-5)
      --gqa <n>              GGML file: grouped-query factor (default 1; 8 for Llama 2 70B)
`;

const options: Record<string, OptionSpec> = {
  llama: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  type: { type: 'string' },
  name: { type: 'string', allowEmpty: true },
  'context-length': { type: 'string' },
  eps: { type: 'string' },
  gqa: { type: 'string' },
};

// Keyed by every member of the library's type, so the compiler flags a list that falls behind.
const TYPES = Object.keys({ f32: 0, f16: 0, bf16: 0 } satisfies Record<LlamaOutType, 0>) as LlamaOutType[];

const mib = (n: number): string => (n / 2 ** 20).toFixed(1);

/** Runs `convert --llama`; returns the exit code. `argv` may hold `--llama` itself. */
export async function convertLlamaCommand(argv: string[]): Promise<number> {
  const { values, positionals, help } = parseCommand('convert', argv, options);
  if (help) {
    process.stdout.write(`Usage:\n${convertLlamaUsage}`);
    return 0;
  }
  const missing = [];
  if (values.output === undefined) missing.push('-o <out.gguf>');
  if (positionals.length === 0) missing.push('the checkpoint folder');
  if (missing.length > 0) throw new UsageError('convert', `missing ${listOf(missing)}`);
  if (positionals.length > 1) throw new UsageError('convert', `--llama takes one checkpoint folder, got ${positionals.length} arguments`);
  const output = values.output as string;
  const type = choiceFlag('convert', 'type', values.type, TYPES);
  const isFile = (await stat(positionals[0]).catch(() => undefined))?.isFile() ?? false;
  if (isFile && type !== undefined) throw new UsageError('convert', '--type applies to checkpoint folders; a GGML file keeps its tensor types');
  if (!isFile && (values['context-length'] ?? values.eps ?? values.gqa) !== undefined) {
    throw new UsageError('convert', '--context-length, --eps and --gqa apply to GGML files; a folder\'s config.json gives them');
  }
  if (isFile) return convertGgmlFile(positionals[0], output, values);

  // Loaded only now: help and usage errors need neither.
  const [{ withTaskProgress }, { convertLlama }] = await Promise.all([import('./task-progress.js'), import('../convert/llama.js')]);
  const result = await withTaskProgress('converting [{bar}] {percentage}% | {value}/{total} MiB | ETA {eta_formatted}', (signal, report) =>
    convertLlama({
      input: positionals[0], output, type, name: values.name as string | undefined, signal,
      onProgress: (done, total) => report(Math.floor(done / 2 ** 20), Math.ceil(total / 2 ** 20)),
    }));
  for (const w of result.warnings) process.stderr.write(`warning: ${w}\n`);
  process.stderr.write(`wrote ${output}: ${result.architecture}, ${result.tensors} tensors, ${(result.parameters / 1e6).toFixed(1)} M parameters, ` +
    `${result.vocabulary} tokens, ${mib(result.bytes)} MiB\n`);
  return 0;
}

async function convertGgmlFile(input: string, output: string, values: Record<string, string | boolean | undefined>): Promise<number> {
  const contextLength = numberFlag('convert', 'context-length', values['context-length'], { integer: true, min: 1, max: 0xffffffff });
  const eps = numberFlag('convert', 'eps', values.eps, { integer: false, min: 0, max: 1 });
  const gqa = numberFlag('convert', 'gqa', values.gqa, { integer: true, min: 1, max: 256 });
  const { convertGgml } = await import('../convert/ggml.js');
  const result = await convertGgml({ input, output, name: values.name as string | undefined, contextLength, eps, gqa });
  process.stderr.write(`wrote ${output}: ${result.format} ${result.fileType}, ${result.tensors} tensors, ${mib(result.bytes)} MiB\n`);
  return 0;
}
