/**
 * @internal
 * `minigpt convert`: writes the BLIP-2 projector GGUF from HF or LAVIS / MiniGPT-4 checkpoints.
 */
import type { Blip2FileType, Blip2PromptTemplate } from '../convert/blip2.js';
import { choiceFlag, listOf, numberFlag, parseCommand, UsageError, type OptionSpec } from './args.js';

export const convertUsage = `  minigpt convert -o <out.gguf> [options] <inputs...>   write a BLIP-2 / MiniGPT-4 projector GGUF
      inputs: a Hugging Face BLIP-2 directory (config.json + safetensors), .safetensors files,
      or LAVIS / MiniGPT-4 .pth checkpoints (e.g. eva_vit_g.pth blip2_pretrained_flant5xxl.pth
      pretrained_minigpt4.pth); later inputs override earlier ones
      -o, --output <file>    the GGUF to write
      --type <t>             f32, f16 (default), q8_0, q5_0, q5_1, q4_0 or q4_1 for the big matrices
      --template <t>         minigpt4-v0, minigpt4-llama2 or none (default: from the inputs)
      --variant <v>          qformer or patch_group (default: from the inputs)
      --ln-vision-eps <e>    eps of ln_vision (default 1e-5 for LAVIS names, the config value for HF)
      --vision-heads <n>     ViT heads, when the width is not a multiple of 88
      --qformer-heads <n>    Q-Former heads, when the hidden size is not a multiple of 64
      --vision-blocks <n>    keep only the first n ViT blocks
      --name <text>          general.name
`;

const options: Record<string, OptionSpec> = {
  output: { type: 'string', short: 'o' },
  type: { type: 'string' },
  template: { type: 'string' },
  variant: { type: 'string' },
  'ln-vision-eps': { type: 'string' },
  'vision-heads': { type: 'string' },
  'qformer-heads': { type: 'string' },
  'vision-blocks': { type: 'string' },
  name: { type: 'string', allowEmpty: true },
};

// Keyed by every member of the library's types, so the compiler flags a list that falls behind.
const FILE_TYPES = Object.keys({ f32: 0, f16: 0, q8_0: 0, q5_0: 0, q5_1: 0, q4_0: 0, q4_1: 0 } satisfies Record<Blip2FileType, 0>) as Blip2FileType[];
const TEMPLATES = Object.keys({ 'minigpt4-v0': 0, 'minigpt4-llama2': 0, none: 0 } satisfies Record<Blip2PromptTemplate, 0>) as Blip2PromptTemplate[];
const VARIANTS = ['qformer', 'patch_group'] as const;
const count = { integer: true, min: 1, max: 1_000_000 };

/** Runs the subcommand; returns the exit code. */
export async function convert(argv: string[]): Promise<number> {
  const { values, positionals, help } = parseCommand('convert', argv, options);
  if (help) {
    process.stdout.write(`Usage:\n${convertUsage}`);
    return 0;
  }
  const missing = [];
  if (values.output === undefined) missing.push('-o <out.gguf>');
  if (positionals.length === 0) missing.push('the inputs (a Hugging Face BLIP-2 directory, .safetensors or .pth files)');
  if (missing.length > 0) throw new UsageError('convert', `missing ${listOf(missing)}`);
  const output = values.output as string;
  const type = choiceFlag('convert', 'type', values.type, FILE_TYPES);
  const promptTemplate = choiceFlag('convert', 'template', values.template, TEMPLATES);
  const variant = choiceFlag('convert', 'variant', values.variant, VARIANTS);
  const lnVisionEps = numberFlag('convert', 'ln-vision-eps', values['ln-vision-eps'], { integer: false, min: 0, max: 1 });
  const visionHeads = numberFlag('convert', 'vision-heads', values['vision-heads'], count);
  const qformerHeads = numberFlag('convert', 'qformer-heads', values['qformer-heads'], count);
  const visionBlocks = numberFlag('convert', 'vision-blocks', values['vision-blocks'], count);

  // Loaded only now, as in describe: help and usage errors need neither.
  const [{ default: cliProgress }, { convertBlip2 }] = await Promise.all([import('cli-progress'), import('../convert/blip2.js')]);
  const interactive = process.stderr.isTTY;
  const bar = new cliProgress.SingleBar(
    { format: 'converting [{bar}] {value}/{total} tensors', stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  try {
    const result = await convertBlip2({
      inputs: positionals,
      output,
      type,
      promptTemplate,
      variant,
      lnVisionEps,
      visionHeads,
      qformerHeads,
      visionBlocks,
      name: values.name as string | undefined,
      onProgress: (done, total) => {
        if (!interactive) return;
        if (!started) { bar.start(total, done); started = true; } else bar.update(done);
      },
    });
    if (started) bar.stop();
    started = false;
    const hp = result.hparams;
    const mib = (result.bytes / 2 ** 20).toFixed(1);
    process.stderr.write(`wrote ${output}: ${hp.variant}, ${result.tensors} tensors, ${mib} MiB, ` +
      `${hp.variant === 'qformer' ? hp.qformer!.queries : (hp.imageSize / hp.patchSize) ** 2 / hp.inputGroup} image tokens of ${hp.outputLength}, ` +
      `template ${hp.promptTemplate}${result.ignored.length > 0 ? `; ignored ${result.ignored.length} unused input tensors` : ''}\n`);
    return 0;
  } finally {
    if (started) bar.stop();
  }
}
