// The loader only takes a binary built for this package version, and says what it tried.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { getSystemInfo } from '../../dist/index.js';
import { root } from '../helpers.js';

const run = promisify(execFile);

test('build-info.json beside the addon matches the package', async () => {
  const info = JSON.parse(await readFile(join(root, 'build', 'Release', 'build-info.json'), 'utf8'));
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
  assert.equal(info.version, pkg.version);
  assert.equal(info.llamaCommit, getSystemInfo().llamaCommit);
  assert.match(info.llamaCommit, /^[0-9a-f]{40}$/);
});

test('a binary built for another version is refused with ERR_NO_BINARY listing what was tried', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-loader-'));
  try {
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
    await writeFile(join(dir, 'package.json'), JSON.stringify({ ...pkg, version: '9.9.9' }));
    await cp(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
    await symlink(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
    await mkdir(join(dir, 'build', 'Release'), { recursive: true });
    await cp(join(root, 'build', 'Release', 'minigpt.node'), join(dir, 'build', 'Release', 'minigpt.node'));
    await cp(join(root, 'build', 'Release', 'build-info.json'), join(dir, 'build', 'Release', 'build-info.json'));
    const probe = `import('./dist/index.js').then((m) => { try { m.getSystemInfo(); console.log('loaded'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); } });`;
    const env = { ...process.env };
    delete env.MINIGPT_NODE_BINARY;
    const { stdout } = await run(process.execPath, ['-e', probe], { cwd: dir, env });
    const err = JSON.parse(stdout);
    assert.equal(err.code, 'ERR_NO_BINARY');
    assert.ok(err.message.includes(`built for minigpt-node ${pkg.version}, this is 9.9.9`), err.message);
    assert.match(err.message, /npx minigpt build/);
    // An explicit path is trusted as it is.
    const explicit = await run(process.execPath, ['-e', probe], { cwd: dir, env: { ...env, MINIGPT_NODE_BINARY: join(dir, 'build', 'Release', 'minigpt.node') } });
    assert.equal(explicit.stdout.trim(), 'loaded');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
