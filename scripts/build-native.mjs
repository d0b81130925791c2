#!/usr/bin/env node
// Configures and builds the native addon with CMake. One script for every way a binary is made:
//   npm run build:native          this repository: a local build tuned to this CPU, plus the test oracles
//   npx minigpt build [--cuda]    an installed package without a usable prebuild: builds from the
//                                 pruned llama.cpp source the tarball carries (no git, no node-llama-cpp)
//   npm run prebuild              (scripts/prebuild.mjs) the portable build for prebuilds/
// Usage: node scripts/build-native.mjs [--oracles] [--prebuild] [--gpu cuda|vulkan|metal]
//          [--cuda-architectures LIST] [--build-dir DIR] [--out DIR] [--jobs N] [--clean] [--verbose]
// Quiet by default: CMake's and the compiler's output (pages of notes from ggml's SIMD code) go to
// <build-dir>/build.log, the terminal gets progress and, on failure, the errors and the log's name.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const HELP = `usage: node scripts/build-native.mjs [options]
  --oracles                 also build llama.cpp's tools used as test oracles (this repository)
  --prebuild                portable build: shared libraries and every CPU variant beside the addon
  --gpu cuda|vulkan|metal   add a GPU backend
  --cuda-architectures L    CUDA architectures (default: native when a GPU is present, else 75;86;89)
  --build-dir DIR           CMake build tree (default: build)
  --out DIR                 where the addon and its libraries go (default: <build-dir>/Release)
  --jobs N                  parallel compile jobs (default: all cores)
  --clean                   start from an empty build tree
  --verbose                 show CMake's and the compiler's output (also MINIGPT_BUILD_VERBOSE=1);
                            otherwise it goes to <build-dir>/build.log
  --no-cpu-variants         with --prebuild: one generic CPU backend instead of every variant
                            (for GPU backend packages, which ship only the GPU library)`;

const GPU_FLAGS = {
  cuda: ['-DGGML_CUDA=ON'],
  vulkan: ['-DGGML_VULKAN=ON'],
  metal: ['-DGGML_METAL=ON', '-DGGML_METAL_EMBED_LIBRARY=ON'],
};

function fail(message) {
  process.stderr.write(`minigpt-node build: ${message}\n`);
  process.exit(1);
}

/**
 * Runs a program; resolves with its exit status (null when it could not be started). With a
 * `log`, its output goes there and only build progress ("[n/N]" lines) reaches the terminal.
 */
function run(program, args, { cwd, log } = {}) {
  return new Promise((resolve) => {
    const child = spawn(program, args, { cwd, stdio: log ? ['ignore', 'pipe', 'pipe'] : 'inherit' });
    child.on('error', () => resolve(null));
    child.on('close', (code) => resolve(code ?? 1));
    if (!log) return;
    let shown = -1;
    let pending = '';
    const onData = (chunk) => {
      log.write(chunk);
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const line of lines) {
        const m = /^\[(\d+)\/(\d+)\]/.exec(line);
        if (!m) continue;
        const percent = Math.floor((100 * Number(m[1])) / Number(m[2]));
        if (process.stderr.isTTY) process.stderr.write(`\rminigpt-node build: compiling ${m[1]}/${m[2]} (${percent}%)   `);
        else if (percent >= shown + 10 || Number(m[1]) === Number(m[2])) {
          shown = percent - (percent % 10);
          process.stderr.write(`minigpt-node build: compiling ${m[1]}/${m[2]} (${percent}%)\n`);
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
}

/** The lines of a failed build worth showing: errors with a little context, at most 60. */
function errorLines(logPath) {
  const lines = readFileSync(logPath, 'utf8').split('\n');
  const keep = new Set();
  lines.forEach((line, i) => {
    if (/\berror\b|FAILED|fatal|CMake Error|undefined reference/i.test(line)) for (let j = Math.max(0, i - 2); j <= Math.min(lines.length - 1, i + 3); j++) keep.add(j);
  });
  const picked = [...keep].sort((a, b) => a - b).map((i) => lines[i]);
  return (picked.length ? picked : lines.slice(-40)).slice(-60).join('\n');
}

function onPath(program, args = ['--version']) {
  const result = spawnSync(program, args, { stdio: 'ignore' });
  return !result.error;
}

/** Whether the CUDA toolkit that owns the nvcc on PATH (or CUDA_PATH) has `header`. */
function cudaHeader(header) {
  const roots = [process.env.CUDA_PATH, process.env.CUDA_HOME, process.platform === 'linux' ? '/usr/local/cuda' : undefined].filter(Boolean);
  const which = spawnSync(process.platform === 'win32' ? 'where' : 'which', ['nvcc'], { encoding: 'utf8' });
  if (which.status === 0) roots.push(join(realpathSync(which.stdout.split(/\r?\n/)[0].trim()), '..', '..'));
  return roots.some((r) => existsSync(join(r, 'include', header)) || existsSync(join(r, 'targets', `${process.arch === 'arm64' ? 'sbsa' : 'x86_64'}-linux`, 'include', header)));
}

/** Refuses early, saying what to install, when a tool the build needs is missing. */
function checkToolchain(gpu) {
  const missing = [];
  if (!onPath('cmake')) {
    missing.push('cmake 3.19 or newer (Debian/Ubuntu: apt-get install cmake; macOS: brew install cmake; Windows: winget install Kitware.CMake)');
  }
  if (process.platform !== 'win32') {
    const cxx = process.env.CXX ? [process.env.CXX] : ['c++', 'g++', 'clang++'];
    if (!cxx.some((c) => onPath(c))) {
      missing.push(
        'a C++17 compiler (Debian/Ubuntu: apt-get install build-essential; Fedora: dnf install gcc-c++; macOS: xcode-select --install)',
      );
    }
  }
  if (gpu === 'cuda') {
    if (!onPath('nvcc')) missing.push('the CUDA toolkit with nvcc and cuBLAS (https://developer.nvidia.com/cuda-downloads)');
    else if (!cudaHeader('cublas_v2.h')) missing.push("cuBLAS's development files (cublas_v2.h; the CUDA toolkit's libcublas-dev / cuda-libraries-dev package)");
  }
  if (gpu === 'vulkan' && !onPath('glslc')) missing.push('the Vulkan SDK or its parts: Vulkan headers and loader, and glslc (Debian/Ubuntu: apt-get install libvulkan-dev glslc spirv-headers)');
  if (gpu === 'metal' && process.platform !== 'darwin') missing.push('macOS (Metal is only built on macOS)');
  if (missing.length > 0) {
    fail(`cannot build the native addon; missing:\n${missing.map((m) => `  - ${m}`).join('\n')}\nInstall them and run the command again.`);
  }
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
    options: {
      oracles: { type: 'boolean', default: false },
      prebuild: { type: 'boolean', default: false },
      gpu: { type: 'string' },
      'cuda-architectures': { type: 'string' },
      'build-dir': { type: 'string' },
      out: { type: 'string' },
      jobs: { type: 'string' },
      clean: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      'no-cpu-variants': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    });
  } catch (err) {
    fail(`${err.message}\n${HELP}`);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return;
  }
  const gpu = values.gpu;
  if (gpu !== undefined && !(gpu in GPU_FLAGS)) fail(`--gpu must be one of ${Object.keys(GPU_FLAGS).join(', ')}, not ${gpu}`);
  if (!existsSync(join(root, 'deps', 'llama.cpp', 'CMakeLists.txt'))) {
    fail('llama.cpp source is missing (deps/llama.cpp). In the repository run `npm run fetch-llama`; an installed package carries it, so reinstall minigpt-node.');
  }
  checkToolchain(gpu);

  const buildDir = resolve(root, values['build-dir'] ?? 'build');
  const outDir = resolve(root, values.out ?? join(buildDir, 'Release'));
  if (values.clean) rmSync(buildDir, { recursive: true, force: true });

  const configure = ['-S', root, '-B', buildDir, '--no-warn-unused-cli', '-DCMAKE_BUILD_TYPE=Release', `-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=${outDir}`];
  if (process.platform === 'win32') configure.push(`-DCMAKE_RUNTIME_OUTPUT_DIRECTORY=${outDir}`, '-DCMAKE_MSVC_RUNTIME_LIBRARY=MultiThreaded');
  if (!existsSync(join(buildDir, 'CMakeCache.txt')) && process.platform !== 'win32' && onPath('ninja')) configure.push('-G', 'Ninja');
  configure.push(`-DMINIGPT_BUILD_ORACLES=${values.oracles ? 'ON' : 'OFF'}`, `-DMINIGPT_PREBUILD=${values.prebuild ? 'ON' : 'OFF'}`);
  if (values.prebuild) configure.push(`-DGGML_CPU_ALL_VARIANTS=${values['no-cpu-variants'] ? 'OFF' : 'ON'}`);
  if (gpu) configure.push(...GPU_FLAGS[gpu]);
  if (gpu === 'cuda') {
    const archs = values['cuda-architectures'] ?? (onPath('nvidia-smi', ['-L']) ? 'native' : '75;86;89');
    configure.push(`-DCMAKE_CUDA_ARCHITECTURES=${archs}`);
  }

  const verbose = values.verbose || process.env.MINIGPT_BUILD_VERBOSE === '1';
  mkdirSync(buildDir, { recursive: true });
  const logPath = join(buildDir, 'build.log');
  const log = verbose ? undefined : createWriteStream(logPath);
  const finished = async () => log && new Promise((r) => log.end(r));
  const failed = async (what) => {
    await finished();
    if (log) process.stderr.write(`\n${errorLines(logPath)}\n`);
    fail(`${what}${log ? ` The whole output is in ${logPath} (or run again with --verbose / MINIGPT_BUILD_VERBOSE=1).` : ' (its messages are above).'}`);
  };
  if (log) process.stderr.write(`minigpt-node build: configuring (output in ${logPath})\n`);
  if ((await run('cmake', configure, { cwd: root, log })) !== 0) await failed('CMake could not configure the build.');
  const jobs = values.jobs ?? String(availableParallelism());
  if ((await run('cmake', ['--build', buildDir, '--config', 'Release', '--parallel', jobs], { cwd: root, log })) !== 0) await failed('the build failed.');
  await finished();
  if (log && process.stderr.isTTY) process.stderr.write('\n');
  process.stderr.write(`minigpt-node build: the addon is in ${outDir}\n`);
}

await main();
