// npm run test:package: what a user gets from the npm tarball. Builds the prebuild, packs the
// package, installs the tarball into a fresh directory with cmake and every C/C++ compiler
// hidden from PATH, and checks that the installed package picks its prebuild and the right CPU
// variant and streams the oracle's greedy tokens; then that `npx minigpt build` names what is
// missing without a toolchain and, with one, builds from the pruned llama.cpp source it carries.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { makeFixtures, oracleGreedy, oraclesBuilt, root } from '../helpers.js';

const run = promisify(execFile);
const platform = `${process.platform}-${process.arch}`;
const N = 16;
const PROMPT = 'What is in this picture?';

let work, app, bareBin, fx, tarball, expectedTokens;

/** A PATH with node, npm, npx and sh only: no cmake, cc, c++, gcc, g++, clang, make, ninja. */
function makeBareBin(dir) {
  mkdirSync(dir);
  symlinkSync('/bin/sh', join(dir, 'sh'));  // npx runs bins through sh
  const npmCli = dirname(realpathSync(spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim()));
  symlinkSync(process.execPath, join(dir, 'node'));
  symlinkSync(join(npmCli, 'npm-cli.js'), join(dir, 'npm'));
  symlinkSync(join(npmCli, 'npx-cli.js'), join(dir, 'npx'));
}

function bareEnv(extra = {}) {
  return { ...process.env, PATH: bareBin, MINIGPT_NODE_BINARY: '', ...extra };
}

/** Runs a probe script inside the app: load, describe the system, stream greedily. */
async function probe(env) {
  const script = `
    import { getSystemInfo, loadModel } from 'minigpt-node';
    const info = getSystemInfo();
    const model = await loadModel({ model: ${JSON.stringify(fx.model)}, projector: ${JSON.stringify(fx.projector)}, threads: 2 });
    const session = model.createSession();
    const image = await model.encodeImage(${JSON.stringify(fx.images.png)});
    const tokens = [];
    for await (const piece of session.stream([image, ${JSON.stringify(PROMPT)}], { temperature: 0, maxTokens: ${N} })) tokens.push(piece.token);
    await model.dispose();
    console.log(JSON.stringify({ binaryPath: info.binaryPath, cpuBackend: info.cpuBackend, tokens }));`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: app, env, maxBuffer: 1 << 24 });
  return JSON.parse(stdout.trim().split('\n').pop());
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'minigpt-package-'));
  bareBin = join(work, 'bin');
  makeBareBin(bareBin);
  for (const tool of ['cmake', 'c++', 'g++', 'gcc', 'cc', 'clang', 'clang++']) {
    assert.equal(spawnSync(tool, ['--version'], { env: bareEnv(), stdio: 'ignore' }).error?.code, 'ENOENT', `${tool} is hidden`);
  }
  fx = await makeFixtures();
  const raw = fx.images.raw;
  expectedTokens = await oracleGreedy({
    model: fx.model, projector: fx.projector, prompt: `<__media__>${PROMPT}`, n: N,
    image: { file: fx.images.rgbFile, width: raw.width, height: raw.height },
  });

  const prebuild = spawnSync('npm', ['run', 'prebuild'], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 30 });
  assert.equal(prebuild.status, 0, `npm run prebuild failed:\n${(prebuild.stdout + prebuild.stderr).slice(-4000)}`);
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, maxBuffer: 1 << 26 });
  tarball = join(work, JSON.parse(packed.stdout)[0].filename);

  app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: app, env: bareEnv(), maxBuffer: 1 << 26 });
});

after(async () => {
  await fx?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

test('the tarball carries the prebuild and the pruned llama.cpp source, no build outputs', { skip: !oraclesBuilt && 'oracles not built' }, () => {
  const pkg = join(app, 'node_modules', 'minigpt-node');
  const prebuilt = readdirSync(join(pkg, 'prebuilds', platform));
  assert.ok(prebuilt.includes('minigpt.node') && prebuilt.includes('build-info.json'));
  assert.ok(prebuilt.filter((f) => /ggml-cpu-/.test(f)).length >= 2, `CPU variants shipped: ${prebuilt.join(' ')}`);
  // The RPC backend (rpcServers, minigpt rpc-server) is a loadable library like the CPU variants.
  assert.ok(prebuilt.some((f) => /ggml-rpc\.(so|dylib|dll)$/.test(f)), `RPC backend shipped: ${prebuilt.join(' ')}`);
  assert.ok(!existsSync(join(pkg, 'build')), 'no local build in the tarball');
  for (const dir of ['ggml/src/ggml-cpu', 'ggml/src/ggml-rpc', 'src', 'include', 'tools/mtmd', 'vendor']) {
    assert.ok(existsSync(join(pkg, 'deps', 'llama.cpp', dir)), `deps/llama.cpp/${dir} shipped`);
  }
  for (const dir of ['tests', 'examples', 'common', 'ggml/src/ggml-sycl', '.git']) {
    assert.ok(!existsSync(join(pkg, 'deps', 'llama.cpp', dir)), `deps/llama.cpp/${dir} left out`);
  }
  assert.equal(JSON.parse(readFileSync(join(pkg, 'prebuilds', platform, 'build-info.json'), 'utf8')).prebuild, true);
});

test('installed without a compiler: loads its prebuild, picks the best CPU variant, streams the oracle tokens', { skip: !oraclesBuilt && 'oracles not built' }, async () => {
  const result = await probe(bareEnv());
  assert.equal(result.binaryPath, join(app, 'node_modules', 'minigpt-node', 'prebuilds', platform, 'minigpt.node'));
  const cpuFlags = new Set((readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '').trim().split(/\s+/));
  const variant = result.cpuBackend.variant;
  assert.ok(result.cpuBackend.library.includes(`ggml-cpu-${variant}`), `variant ${variant} from ${result.cpuBackend.library}`);
  if (cpuFlags.has('avx2')) {
    assert.equal(result.cpuBackend.features.AVX2, '1', `an AVX2 machine gets an AVX2 variant, got ${variant}`);
  }
  if (cpuFlags.has('avx512f')) {
    assert.equal(result.cpuBackend.features.AVX512, '1', `an AVX-512 machine gets an AVX-512 variant, got ${variant}`);
  }
  assert.ok(expectedTokens.length > 0);
  assert.deepEqual(result.tokens, expectedTokens);
});

test('npx minigpt build without cmake or a compiler says what to install', { skip: !oraclesBuilt && 'oracles not built' }, async () => {
  const r = spawnSync(join(bareBin, 'npx'), ['--no-install', 'minigpt', 'build'], { cwd: app, env: bareEnv(), encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /cmake/);
  assert.match(r.stderr, /C\+\+17 compiler/);
  assert.doesNotMatch(r.stderr, /node-llama-cpp|git /);
});

test('npx minigpt build builds from the shipped source; the local build is then preferred', { skip: !oraclesBuilt && 'oracles not built', timeout: 40 * 60_000 }, async () => {
  // ccache hits the repository's own build when paths are taken relative to the build tree.
  const env = { ...process.env, MINIGPT_NODE_BINARY: '', CCACHE_BASEDIR: '/', CCACHE_NOHASHDIR: 'true' };
  const r = spawnSync('npx', ['--no-install', 'minigpt', 'build', '--jobs', String(Math.max(2, availableParallelism()))], {
    cwd: app, env, encoding: 'utf8', maxBuffer: 1 << 30,
  });
  assert.equal(r.status, 0, `npx minigpt build failed:\n${(r.stdout + r.stderr).slice(-4000)}`);
  const result = await probe(bareEnv());
  assert.equal(result.binaryPath, join(app, 'node_modules', 'minigpt-node', 'build', 'Release', 'minigpt.node'));
  assert.equal(result.cpuBackend.variant, 'built-in');
  assert.deepEqual(result.tokens, expectedTokens);
});
