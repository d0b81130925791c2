#!/usr/bin/env node
// Puts llama.cpp's source in deps/llama.cpp, cloned from the git bundle that the pinned
// node-llama-cpp devDependency ships, and records its commit in deps/llama.cpp.commit.
// Re-running with the right commit already checked out does nothing.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const target = join(root, 'deps', 'llama.cpp');
const commitFile = join(root, 'deps', 'llama.cpp.commit');

function fail(message) {
  process.stderr.write(`minigpt-node: ${message}\n`);
  process.exit(1);
}

function git(args, cwd) {
  try {
    return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    if (err.code === 'ENOENT') {
      fail('git was not found on PATH. Install git (Debian/Ubuntu: apt-get install git; macOS: xcode-select --install) and run npm install again.');
    }
    fail(`git ${args.join(' ')} failed: ${(err.stderr || err.message).toString().trim()}`);
  }
}

function findBundle() {
  // node-llama-cpp's "exports" hides package.json, so walk up node_modules folders as Node would.
  for (let dir = root; ; dir = dirname(dir)) {
    const pkg = join(dir, 'node_modules', 'node-llama-cpp');
    if (existsSync(pkg)) {
      const bundle = join(pkg, 'llama', 'gitRelease.bundle');
      if (!existsSync(bundle)) fail(`${bundle} is missing: the node-llama-cpp package looks incomplete; reinstall it.`);
      return bundle;
    }
    if (dirname(dir) === dir) break;
  }
  fail("node-llama-cpp (the devDependency that carries llama.cpp's source) is not installed. Run npm install in the repository root first.");
}

const bundle = findBundle();
const wanted = git(['bundle', 'list-heads', bundle]).split('\n')[0].split(' ')[0];
if (!/^[0-9a-f]{40}$/.test(wanted)) fail(`could not read the commit of ${bundle}`);

if (existsSync(join(target, '.git'))) {
  const have = git(['rev-parse', 'HEAD'], target);
  if (have === wanted) {
    if (!existsSync(commitFile) || readFileSync(commitFile, 'utf8').trim() !== wanted) writeFileSync(commitFile, wanted + '\n');
    process.exit(0);
  }
  rmSync(target, { recursive: true, force: true });
}
mkdirSync(dirname(target), { recursive: true });
process.stderr.write(`minigpt-node: cloning llama.cpp ${wanted.slice(0, 7)} from node-llama-cpp's bundle into deps/llama.cpp\n`);
git(['-c', 'advice.detachedHead=false', 'clone', '--quiet', bundle, target]);
git(['-c', 'advice.detachedHead=false', 'checkout', '--quiet', wanted], target);
writeFileSync(commitFile, wanted + '\n');
