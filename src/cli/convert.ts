/**
 * @internal
 * `minigpt convert`: writes the BLIP-2 projector GGUF from HF or LAVIS / MiniGPT-4 checkpoints.
 */
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { convertBlip2, type Blip2FileType, type Blip2PromptTemplate } from '../convert/blip2.js';
import { InvalidArgumentError } from '../errors.js';

export const convertUsage = `  minigpt convert -o <out.gguf> [options] <inputs...>
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

const int = (value: string | undefined, flag: string): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} expects a positive integer, got "${value}"`);
  return n;
};

/** Runs the subcommand; returns the exit code. */
export async function convert(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        output: { type: 'string', short: 'o' },
        type: { type: 'string' },
        template: { type: 'string' },
        variant: { type: 'string' },
        'ln-vision-eps': { type: 'string' },
        'vision-heads': { type: 'string' },
        'qformer-heads': { type: 'string' },
        'vision-blocks': { type: 'string' },
        name: { type: 'string' },
      },
    });
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (!values.output || positionals.length === 0) {
    process.stderr.write(`Usage:\n${convertUsage}`);
    return 2;
  }
  let eps: number | undefined;
  if (values['ln-vision-eps'] !== undefined) {
    eps = Number(values['ln-vision-eps']);
    if (!Number.isFinite(eps) || eps < 0) throw new InvalidArgumentError(`--ln-vision-eps expects a number, got "${values['ln-vision-eps']}"`);
  }

  const interactive = process.stderr.isTTY;
  const bar = new cliProgress.SingleBar(
    { format: 'converting [{bar}] {value}/{total} tensors', stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  try {
    const result = await convertBlip2({
      inputs: positionals,
      output: values.output,
      type: values.type as Blip2FileType | undefined,
      promptTemplate: values.template as Blip2PromptTemplate | undefined,
      variant: values.variant as 'qformer' | 'patch_group' | undefined,
      lnVisionEps: eps,
      visionHeads: int(values['vision-heads'], '--vision-heads'),
      qformerHeads: int(values['qformer-heads'], '--qformer-heads'),
      visionBlocks: int(values['vision-blocks'], '--vision-blocks'),
      name: values.name,
      onProgress: (done, total) => {
        if (!interactive) return;
        if (!started) { bar.start(total, done); started = true; } else bar.update(done);
      },
    });
    if (started) bar.stop();
    started = false;
    const hp = result.hparams;
    const mib = (result.bytes / 2 ** 20).toFixed(1);
    process.stderr.write(`wrote ${values.output}: ${hp.variant}, ${result.tensors} tensors, ${mib} MiB, ` +
      `${hp.variant === 'qformer' ? hp.qformer!.queries : (hp.imageSize / hp.patchSize) ** 2 / hp.inputGroup} image tokens of ${hp.outputLength}, ` +
      `template ${hp.promptTemplate}${result.ignored.length > 0 ? `; ignored ${result.ignored.length} unused input tensors` : ''}\n`);
    return 0;
  } finally {
    if (started) bar.stop();
  }
}
