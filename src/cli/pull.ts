/**
 * @internal
 * `minigpt pull`: makes models local (catalog names, hf: URIs, https URLs), with progress on
 * stderr and the resulting paths on stdout. Ctrl-C stops it and keeps the partial file, which
 * the next pull resumes.
 */
import { stat } from 'node:fs/promises';
import type { ModelFile, ResolvedModel } from '../models/index.js';
import { InvalidArgumentError, MinigptError } from '../errors.js';
import { parseCommand, UsageError, type OptionSpec } from './args.js';
import { formatBytes, progressView } from './download-progress.js';

export const pullUsage = `  minigpt pull <name|uri>... [--projector <uri>] [--offline]   download models into the cache
      <name|uri>: a catalog name ('minigpt models' lists them), hf:<owner>/<repo>/<file.gguf>[#<revision>],
      hf:<owner>/<repo>:<quant> (its GGUF of that quant and the repo's mmproj) or an https:// URL
      -p, --projector <uri>  the projector to pull with the one model given (default: the entry's or repo's)
      --offline              make no request: only say what is cached and what is missing
      For a model built from its original checkpoints (minigpt4-7b, minigpt4-13b, minigpt4-llama2-7b):
      --type <quant>         the LLM's quantization (default: the entry's, Q4_K_M)
      --encoder-type <type>  the image encoder's type: f16, q8_0, ... (default: the entry's, q8_0)
      --keep                 keep the downloaded checkpoints and the f16 LLM GGUF
      --from <path>          checkpoints you already have: a file, or a folder holding them by their
                             names (eva_vit_g.pth, ...) and/or the Hugging Face LLM folder; the rest is downloaded
      Ctrl-C stops it and keeps what was downloaded; the same pull resumes from there
`;

const options: Record<string, OptionSpec> = {
  projector: { type: 'string', short: 'p' },
  offline: { type: 'boolean' },
  type: { type: 'string' },
  'encoder-type': { type: 'string' },
  keep: { type: 'boolean' },
  from: { type: 'string' },
};

const STEP_TEXT = {
  download: 'getting the checkpoints',
  encoder: 'converting the image encoder',
  llm: 'converting the language model to f16',
  quantize: 'quantizing the language model',
  cleanup: 'removing the intermediate files',
} as const;

/** Exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it. */
export const INTERRUPTED = 130;

/** Runs the subcommand; returns the exit code. */
export async function pull(argv: string[]): Promise<number> {
  const { values, positionals: specs, help } = parseCommand('pull', argv, options);
  if (help) {
    process.stdout.write(`Usage:\n${pullUsage}`);
    return 0;
  }
  if (specs.length === 0) throw new UsageError('pull', "missing the model to pull (a catalog name, hf: URI or https URL; 'minigpt models' lists the names)");
  const projector = values.projector as string | undefined;
  if (projector !== undefined && specs.length > 1) throw new UsageError('pull', '--projector goes with one model, and this pull names several');

  const recipe = {
    ...(values.type !== undefined ? { type: values.type as string } : {}),
    ...(values['encoder-type'] !== undefined ? { encoderType: values['encoder-type'] as string } : {}),
    ...(values.keep ? { keep: true } : {}),
    ...(values.from !== undefined ? { from: values.from as string } : {}),
  };
  if (Object.keys(recipe).length && specs.length > 1) throw new UsageError('pull', '--type, --encoder-type, --keep and --from go with one model, and this pull names several');
  const { pullModel, modelsDir } = await import('../models/index.js');
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  const view = await progressView();
  try {
    for (const spec of specs) {
      let resolved: ResolvedModel;
      try {
        resolved = await specErrorsAreUsage(
          'pull',
          pullModel({ model: spec, projector }, {
            signal: controller.signal, onProgress: view.onProgress, offline: values.offline ? true : undefined, ...recipe,
            onStep: (e) => {
              view.stop();
              process.stderr.write(`${spec}: ${STEP_TEXT[e.step]} ${e.state === 'start' ? '...' : e.state === 'done' ? 'done' : 'already done'}\n`);
            },
          }),
        );
      } catch (err) {
        view.stop();
        if (controller.signal.aborted) {
          process.stderr.write(
            `minigpt pull: stopped; what was downloaded of ${spec} is kept in ${modelsDir()} and 'minigpt pull ${spec}' resumes it\n`,
          );
          return INTERRUPTED;
        }
        throw err;
      }
      view.stop();
      process.stdout.write(await pulledLines(spec, resolved));
    }
    return 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

async function pulledLines(spec: string, resolved: ResolvedModel): Promise<string> {
  const line = async (role: string, file: ModelFile) => {
    const size = await stat(file.path).then((s) => s.size, () => file.size);
    return `  ${role.padEnd(10)} ${file.path}${size === undefined ? '' : ` (${formatBytes(size)})`}\n`;
  };
  let out = `${resolved.catalogName ?? spec}\n${await line('model', resolved.model)}`;
  if (resolved.projector) out += await line('projector', resolved.projector);
  return out;
}

/**
 * A name or URI the library cannot parse came from the command line: a usage error (exit 2)
 * keeping the library's message and code, which say what is wrong with it.
 */
export function specErrorsAreUsage<T>(command: string, work: Promise<T>): Promise<T> {
  return work.catch((err: unknown) => {
    if (err instanceof InvalidArgumentError || (err instanceof MinigptError && err.code === 'ERR_INVALID_ARGUMENT')) {
      throw new UsageError(command, `${err.message} [${err.code}]`);
    }
    throw err;
  });
}
