/**
 * @internal
 * `minigpt rm`: deletes the cached files of models named like `pull` names them.
 */
import { parseCommand, UsageError, type OptionSpec } from './args.js';
import { specErrorsAreUsage } from './pull.js';

export const rmUsage = `  minigpt rm <name|uri>...   delete models from the cache (their files and any partial download)
`;

const options: Record<string, OptionSpec> = {};

/** Runs the subcommand; returns the exit code. */
export async function rm(argv: string[]): Promise<number> {
  const { positionals: specs, help } = parseCommand('rm', argv, options);
  if (help) {
    process.stdout.write(`Usage:\n${rmUsage}`);
    return 0;
  }
  if (specs.length === 0) throw new UsageError('rm', "missing the model to remove (a catalog name or URI; 'minigpt models' lists what is cached)");
  const { removeModel } = await import('../models/index.js');
  for (const spec of specs) {
    const removed = await specErrorsAreUsage('rm', removeModel(spec));
    if (removed.length === 0) process.stderr.write(`minigpt rm: nothing of ${spec} is in the cache\n`);
    for (const path of removed) process.stdout.write(`removed ${path}\n`);
  }
  return 0;
}
