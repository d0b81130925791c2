/**
 * @internal
 * `minigpt build`: builds the native addon from the llama.cpp source the package carries.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { choiceFlag, numberFlag, parseCommand, type OptionSpec } from './args.js';

export const buildUsage = `  minigpt build [options]    build the native addon from the llama.cpp source in this package
                             (needs cmake and a C++17 compiler; tuned to this machine's CPU)
      --gpu <cuda|vulkan|metal>  add a GPU backend (needs its SDK)
      --cuda-architectures <l>   e.g. "86;89" (default: this machine's GPU)
      --jobs <n>             parallel compile jobs (default: all cores)
      --clean                start from an empty build tree
`;

const options: Record<string, OptionSpec> = {
  gpu: { type: 'string' },
  'cuda-architectures': { type: 'string' },
  jobs: { type: 'string' },
  clean: { type: 'boolean' },
};

/** Runs the subcommand; returns the exit code. */
export function build(argv: string[]): number {
  // Checked here rather than left to the build script, whose errors exit 1 after its own
  // usage text, and which takes more options (for this repository's builds) than we offer.
  const { values, help } = parseCommand('build', argv, options, false);
  if (help) {
    process.stdout.write(`Usage:\n${buildUsage}`);
    return 0;
  }
  choiceFlag('build', 'gpu', values.gpu, ['cuda', 'vulkan', 'metal']);
  numberFlag('build', 'jobs', values.jobs, { integer: true, min: 1, max: 4096 });
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
