/**
 * @internal
 * `minigpt describe`: streams a model's answer about one or more images to stdout.
 */
import { InvalidArgumentError, MinigptError } from '../errors.js';
import type { ImageEmbedding } from '../embedding.js';
import { listOf, numberFlag, parseCommand, UsageError, type OptionSpec } from './args.js';
import { canAsk, confirm } from './confirm.js';
import { missingFiles, planLines, progressView, sizeSummary } from './download-progress.js';

export const describeUsage = `  minigpt describe <image> [<image>...] [--model <name|uri|llm.gguf>] [--projector <mmproj.gguf|uri>] [options]
      several images all go into the prompt, in the order given, before the prompt text
      -m, --model <m>        the language model: a GGUF file, a catalog name ('minigpt models'), an hf: URI
                             or an https URL (default: the catalog's default, downloaded on first use)
      -p, --projector <p>    the image projector GGUF (mmproj, or a BLIP-2 one from 'minigpt convert');
                             optional when --model is a catalog name or an hf: repo that brings one
      -y, --yes              download what the model needs without asking (needed when not on a terminal)
      --prompt <text>        question about the image(s) (default: "Describe this image.")
      --max-tokens <n>       most tokens to generate, 1 to 1000000 (default: 256)
      --temperature <t>      0 for greedy, up to 100 (default: 0.2)
      --context-size <n>     context size in tokens, 16 to 16777216 (default: the model's, at most 4096)
      --threads <n>          CPU threads, 1 to 1024, used up to the CPUs there are (default: at most 8)
      --template <t>         'auto' (the model's chat template), 'none', or a Jinja chat template
      --system <text>        system prompt
      -v, --verbose          after the answer, print the token counts and why it ended on stderr
`;

const options: Record<string, OptionSpec> = {
  model: { type: 'string', short: 'm' },
  projector: { type: 'string', short: 'p' },
  yes: { type: 'boolean', short: 'y' },
  prompt: { type: 'string', allowEmpty: true },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'context-size': { type: 'string' },
  threads: { type: 'string' },
  template: { type: 'string' },
  system: { type: 'string', allowEmpty: true },
  verbose: { type: 'boolean', short: 'v' },
};

// The library's own ranges (src/model.ts, src/session.ts), checked here first so the message
// names the flag; the library still validates, and its errors are usage errors too.
const NUMBERS = {
  'max-tokens': { integer: true, min: 1, max: 1_000_000 },
  temperature: { integer: false, min: 0, max: 100 },
  'context-size': { integer: true, min: 16, max: 1 << 24 },
  threads: { integer: true, min: 1, max: 1024 },
} as const;

/** Runs the subcommand; returns the exit code. */
export async function describe(argv: string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (err) {
    if (err instanceof MinigptError && !(err instanceof InvalidArgumentError)) {
      const message = inCliTerms(err.message);
      if (message !== err.message) throw new MinigptError(err.code, message, { cause: err });
    }
    throw err;
  }
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals: images, help } = parseCommand('describe', argv, options);
  if (help) {
    process.stdout.write(`Usage:\n${describeUsage}`);
    return 0;
  }
  const missing = [];
  if (images.length === 0) missing.push('the image to describe');
  // A projector alone cannot pick a language model; the default entry brings its own projector.
  if (values.model === undefined && values.projector !== undefined) missing.push('--model <llm.gguf>');
  if (missing.length > 0) throw new UsageError('describe', `missing ${listOf(missing)}`);
  const [maxTokens, temperature, contextSize, threads] = (['max-tokens', 'temperature', 'context-size', 'threads'] as const).map((flag) =>
    numberFlag('describe', flag, values[flag], NUMBERS[flag]),
  );
  const prompt = (values.prompt as string | undefined) ?? 'Describe this image.';

  // Loaded only now: the native addon and sharp take a while, and help or a usage error need neither.
  const [{ default: cliProgress }, { decodeImage }, { loadModel }, models] = await Promise.all([
    import('cli-progress'),
    import('../image.js'),
    import('../model.js'),
    import('../models/index.js'),
  ]);
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  // Every image is read before the model loads, which can take minutes: a mistyped path fails at once.
  for (const image of images) await decodeImage(image);

  const { model, projector } = await localFiles(models, values, controller.signal);
  const interactive = process.stderr.isTTY;
  const bar = new cliProgress.SingleBar(
    { format: 'loading [{bar}] {percentage}%', stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  if (interactive) bar.start(100, 0);
  const loaded = await asUsage(
    loadModel({
      model,
      projector,
      threads,
      contextSize,
      onProgress: (p) => interactive && bar.update(Math.round(p * 100)),
      signal: controller.signal,
    }),
  ).finally(() => interactive && bar.stop());
  try {
    const session = asUsage(() => loaded.createSession({ template: values.template as string | undefined, systemPrompt: values.system as string | undefined }));
    const embeddings: ImageEmbedding[] = [];
    for (const image of images) embeddings.push(await loaded.encodeImage(image, { signal: controller.signal }));
    const stream = session.stream([...embeddings, prompt], {
      maxTokens: maxTokens ?? 256,
      temperature: temperature ?? 0.2,
      signal: controller.signal,
    });
    // The options are checked at the first step; a piece already written means they passed.
    for (let next = await asUsage(stream.next()); !next.done; next = await stream.next()) process.stdout.write(next.value.text);
    process.stdout.write('\n');
    if (values.verbose) {
      const { promptTokens, generatedTokens, finishReason } = session.stats;
      const perImage = embeddings.map((e) => e.nTokens).join(' + ');
      process.stderr.write(
        `minigpt: ${embeddings.length} image${embeddings.length === 1 ? '' : 's'} (${perImage} tokens), ` +
          `prompt ${promptTokens} tokens, generated ${generatedTokens} tokens, finished: ${finishReason}\n`,
      );
    }
    return 0;
  } finally {
    await loaded.dispose();
  }
}

/**
 * The local paths of the model and projector to load: `--model` and `--projector` resolved, or
 * the catalog's default entry. What is not in the cache yet is downloaded, after saying what
 * and how big, and only with --yes or a yes at the terminal's prompt.
 */
async function localFiles(
  models: typeof import('../models/index.js'),
  values: Record<string, string | boolean | undefined>,
  signal: AbortSignal,
): Promise<{ model: string; projector: string }> {
  let name = values.model as string | undefined;
  if (name === undefined) {
    const { catalog } = await models.listModels();
    name = catalog.find((e) => e.default)?.name;
    if (name === undefined) throw new UsageError('describe', 'missing --model <llm.gguf>: the catalog names no default model');
  }
  const spec = { model: name, projector: values.projector as string | undefined };
  const plan = await asUsage(models.planModel(spec));
  if (plan.projector === undefined) throw new UsageError('describe', 'missing --projector <mmproj.gguf>');
  const missing = missingFiles(plan);
  // Offline, the library's own error says which files are missing and why nothing was fetched.
  if (missing.files.length > 0 && process.env.MINIGPT_OFFLINE !== '1') {
    const label = plan.catalogName ?? name;
    if (!values.yes && !canAsk()) {
      throw new UsageError(
        'describe',
        `${label} is not downloaded yet (${sizeSummary(missing)}); pass --yes to download it, or get it first with 'minigpt pull ${label}'`,
      );
    }
    process.stderr.write(planLines(label, plan, models.modelsDir()));
    if (!values.yes && !(await confirm('Download?'))) {
      throw new MinigptError('ERR_ABORTED', `nothing downloaded; 'minigpt pull ${label}' downloads it, --yes downloads without asking`);
    }
    const view = await progressView();
    const pulled = await asUsage(models.pullModel(spec, { signal, onProgress: view.onProgress })).finally(view.stop);
    return { model: pulled.model.path, projector: (pulled.projector ?? plan.projector).path };
  }
  if (missing.files.length > 0) {
    const pulled = await asUsage(models.pullModel(spec, { signal }));
    return { model: pulled.model.path, projector: (pulled.projector ?? plan.projector).path };
  }
  return { model: plan.model.path, projector: plan.projector.path };
}

// Every value the library validates here came from the command line: a value it refuses is a
// usage error (exit 2), whatever its wording. Its message and code are kept, being precise.
function asUsage<T>(work: Promise<T>): Promise<T>;
function asUsage<T>(work: () => T): T;
function asUsage<T>(work: Promise<T> | (() => T)): Promise<T> | T {
  const convert = (err: unknown): never => {
    if (err instanceof InvalidArgumentError) throw new UsageError('describe', `${inCliTerms(err.message)} [${err.code}]`);
    throw err;
  };
  if (typeof work === 'function') {
    try {
      return work();
    } catch (err) {
      return convert(err);
    }
  }
  return work.catch(convert);
}

// The library's advice names its API ("pass createSession({ template: 'none' })", "a larger
// contextSize"); on the command line the same choices are flags.
function inCliTerms(message: string): string {
  return message
    .replace(/createSession\(\{ template: '([\w-]+)' \}\)/g, '--template $1')
    .replace(/\bcontextSize\b/g, '--context-size')
    .replace(/\bmaxTokens\b/g, '--max-tokens')
    .replace(/\bsystemPrompt\b/g, '--system');
}
