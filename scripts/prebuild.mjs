#!/usr/bin/env node
// npm run prebuild [-- --gpu cuda|vulkan|metal]: the portable build, laid out for npm.
//   prebuilds/<platform>-<arch>/     the addon, llama/ggml/mtmd as shared libraries, every CPU
//                                    variant (ggml loads the best one for the CPU it runs on),
//                                    Metal on macOS; shipped in the package tarball
//   packages/<platform>-<arch>-<gpu>/ with --gpu cuda or vulkan: only the GPU backend library,
//                                    as the optional package @minigpt-node/<platform>-<arch>-<gpu>
// Other options go to scripts/build-native.mjs (--jobs, --cuda-architectures, --clean).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values, tokens } = parseArgs({
  options: { gpu: { type: 'string' }, jobs: { type: 'string' }, 'cuda-architectures': { type: 'string' }, clean: { type: 'boolean' } },
  tokens: true,
});
const gpu = values.gpu;
const platform = `${process.platform}-${process.arch}`;
const buildDir = join(root, 'build-prebuild', gpu ?? 'cpu');
const outDir = join(buildDir, 'Release');

function step(program, args) {
  const result = spawnSync(program, args, { cwd: root, stdio: 'inherit' });
  if (result.error || result.status !== 0) process.exit(result.status || 1);
}

if (existsSync(join(root, '.git')) && existsSync(join(root, 'scripts', 'fetch-llama.mjs'))) step(process.execPath, [join(root, 'scripts', 'fetch-llama.mjs')]);
const passOn = tokens.filter((t) => t.kind === 'option').flatMap((t) => (t.value === undefined ? [t.rawName] : [t.rawName, t.value]));
// A cuda/vulkan package ships only its GPU library, so its build skips the CPU variants.
const cpuVariants = gpu === 'cuda' || gpu === 'vulkan' ? ['--no-cpu-variants'] : [];
step(process.execPath, [join(root, 'scripts', 'build-native.mjs'), '--prebuild', '--build-dir', buildDir, '--out', outDir, ...cpuVariants, ...passOn]);

const isLibrary = (name) => /\.(so|dylib|dll)$/.test(name);
// The GPU backend of a --gpu cuda/vulkan build goes to its own package; Metal stays in.
const gpuLibrary = (name) => gpu !== undefined && gpu !== 'metal' && new RegExp(`^(lib)?ggml-${gpu}\\.(so|dll)$`).test(name);

function copyInto(dir, names) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const name of names) copyFileSync(join(outDir, name), join(dir, name));
  const total = names.reduce((sum, n) => sum + statSync(join(dir, n)).size, 0);
  process.stderr.write(`prebuild: ${names.length} files, ${(total / 1048576).toFixed(1)} MiB in ${dir}\n`);
}

const built = readdirSync(outDir);
if (gpu === undefined || gpu === 'metal') {
  const names = built.filter((n) => n === 'minigpt.node' || n === 'build-info.json' || isLibrary(n));
  copyInto(join(root, 'prebuilds', platform), names);
} else {
  const names = built.filter(gpuLibrary);
  if (names.length !== 1) {
    process.stderr.write(`prebuild: expected one ggml-${gpu} library in ${outDir}, found ${names.length}\n`);
    process.exit(1);
  }
  const dir = join(root, 'packages', `${platform}-${gpu}`);
  copyInto(dir, names);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const [os, cpu] = [process.platform, process.arch];
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify(
      {
        name: `@minigpt-node/${platform}-${gpu}`,
        version: pkg.version,
        description: `The ${gpu.toUpperCase()} backend of minigpt-node ${pkg.version} for ${platform} (ggml, llama.cpp ${readFileSync(join(root, 'deps', 'llama.cpp.commit'), 'utf8').trim().slice(0, 7)}).`,
        license: pkg.license,
        os: [os],
        cpu: [cpu],
        files: [...names, 'package.json'],
        minigpt: { backend: names[0] },
      },
      null,
      2,
    ) + '\n',
  );
}
