#!/usr/bin/env node
/**
 * @internal
 * The `minigpt` command line:
 *   minigpt describe <image> --model m.gguf --projector p.gguf [--prompt ...]
 *   minigpt convert -o out.gguf <inputs...>
 *   minigpt build [--gpu cuda|vulkan|metal]
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { loadModel } from '../model.js';
import { MinigptError } from '../errors.js';
import { convert, convertUsage } from './convert.js';

const usage = `Usage:
  minigpt describe <image> --model <llm.gguf> --projector <mmproj.gguf> [options]
      --prompt <text>        question about the image (default: "Describe this image.")
      --max-tokens <n>       most tokens to generate (default: 256)
      --temperature <t>      0 for greedy (default: 0.2)
      --context-size <n>     context size in tokens
      --threads <n>          CPU threads
      --template <t>         'auto' (the model's chat template) or 'none'
      --system <text>        system prompt
${convertUsage}  minigpt build [options]    build the native addon from the llama.cpp source in this package
                             (needs cmake and a C++17 compiler; tuned to this machine's CPU)
      --gpu <cuda|vulkan|metal>  add a GPU backend (needs its SDK)
      --cuda-architectures <l>   e.g. "86;89" (default: this machine's GPU)
      --jobs <n>             parallel compile jobs
      --clean                start from an empty build tree
`;

async function describe(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      model: { type: 'string', short: 'm' },
      projector: { type: 'string', short: 'p' },
      prompt: { type: 'string', default: 'Describe this image.' },
      'max-tokens': { type: 'string', default: '256' },
      temperature: { type: 'string', default: '0.2' },
      'context-size': { type: 'string' },
      threads: { type: 'string' },
      template: { type: 'string', default: 'auto' },
      system: { type: 'string' },
    },
  });
  const image = positionals[0];
  if (!image || !values.model || !values.projector) {
    process.stderr.write(usage);
    return 2;
  }
  const bar = new cliProgress.SingleBar(
    { format: 'loading [{bar}] {percentage}%', stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  const interactive = process.stderr.isTTY;
  if (interactive) bar.start(100, 0);
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  try {
    const model = await loadModel({
      model: values.model,
      projector: values.projector,
      threads: values.threads ? Number(values.threads) : undefined,
      contextSize: values['context-size'] ? Number(values['context-size']) : undefined,
      onProgress: (p) => interactive && bar.update(Math.round(p * 100)),
      signal: controller.signal,
    });
    if (interactive) bar.stop();
    try {
      const session = model.createSession({ template: values.template, systemPrompt: values.system });
      const embedding = await model.encodeImage(image, { signal: controller.signal });
      for await (const piece of session.stream([embedding, values.prompt], {
        maxTokens: Number(values['max-tokens']),
        temperature: Number(values.temperature),
        signal: controller.signal,
      })) {
        process.stdout.write(piece.text);
      }
      process.stdout.write('\n');
    } finally {
      await model.dispose();
    }
    return 0;
  } finally {
    if (interactive) bar.stop();
  }
}

function build(argv: string[]): number {
  // The same driver as the repository's own build; it checks for cmake and a compiler first
  // and names what is missing. The result goes to build/Release, which the loader prefers.
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const result = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs'), ...argv], { cwd: root, stdio: 'inherit' });
  if (result.error) {
    process.stderr.write(`minigpt build: could not start the build: ${result.error.message}\n`);
    return 1;
  }
  return result.status ?? 1;
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'describe') return describe(rest);
  if (command === 'convert') return convert(rest);
  if (command === 'build') return build(rest);
  process.stderr.write(usage);
  return command === undefined || command === '--help' || command === '-h' ? 0 : 2;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof MinigptError) process.stderr.write(`minigpt: ${err.message} [${err.code}]\n`);
    else process.stderr.write(`minigpt: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
