// The command line's model commands against a stand-in hub on 127.0.0.1 (no internet): `pull`
// then `models` then `rm`; `describe` with no --model downloads the catalog's default only with
// --yes (or a yes at a terminal), and then answers as the library does; a 404 and the offline
// switch are one line with exit 1; Ctrl-C keeps a part file the next pull resumes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { startCliHub } from '../fixtures/cli-hub.js';
import { makeFixtures, root } from '../helpers.js';

const cliPath = join(root, 'dist', 'cli', 'index.js');
const COMMIT = 'a'.repeat(40);
const REPO = 'test-org/tiny-GGUF';
let fx;
let hub;
let work;
let cacheDir;
let catalog;

before(async () => {
  fx = await makeFixtures();
  hub = await startCliHub({
    [`${REPO}/tiny-llama.gguf`]: fx.model,
    [`${REPO}/mmproj-tiny.gguf`]: fx.projector,
    [`${REPO}/slow.gguf`]: { path: fx.model, stall: true },
  });
  work = await mkdtemp(join(tmpdir(), 'minigpt-cli-models-'));
  catalog = join(work, 'catalog.json');
  const pinned = (file) => ({ uri: `hf:${REPO}/${file}#${COMMIT}`, ...hub.file(`${REPO}/${file}`) });
  await writeFile(
    catalog,
    JSON.stringify({
      default: 'tiny',
      models: {
        tiny: { description: 'A tiny test model.', license: 'MIT', sources: ['test'], model: pinned('tiny-llama.gguf'), projector: pinned('mmproj-tiny.gguf') },
        'tiny-later': { placeholder: true, description: 'Not published yet.', license: 'MIT', sources: ['test'] },
      },
    }),
  );
});
after(async () => {
  await hub?.close();
  await fx?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});
beforeEach(async () => {
  // Every test starts from an empty cache of its own.
  cacheDir = await mkdtemp(join(work, 'cache-'));
  hub.requests.length = 0;
});

/** Runs the CLI against the stand-in hub and the test catalog; resolves { status, stdout, stderr }. */
function cli(args, { env = {}, onStderr } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MINIGPT_MODELS_DIR: cacheDir, HF_ENDPOINT: hub.endpoint, MINIGPT_CATALOG: catalog, MINIGPT_OFFLINE: '', HF_TOKEN: '', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d;
      onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Every file under `dir`, relative. */
async function filesUnder(dir) {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => join(d.parentPath ?? d.path, d.name));
}

const ggufs = async () => (await filesUnder(cacheDir)).filter((f) => f.endsWith('.gguf'));

/** A usage error: exit 2, nothing on stdout, one line naming the problem and --help. */
async function usageError(args, command, problem) {
  const r = await cli(args);
  const where = `minigpt ${args.join(' ')}\n${r.stderr}`;
  assert.equal(r.status, 2, where);
  assert.equal(r.stdout, '', where);
  assert.match(r.stderr, /^[^\n]+\n$/, `one line: ${where}`);
  assert.ok(r.stderr.startsWith(`minigpt ${command}: `), where);
  assert.ok(r.stderr.endsWith(`. See 'minigpt ${command} --help'.\n`), where);
  assert.match(r.stderr, problem, where);
  return r;
}

/** A runtime failure: exit 1, one line `minigpt: <message> [<code>]`. */
async function runtimeError(args, code, message, options) {
  const r = await cli(args, options);
  const where = `minigpt ${args.join(' ')}\n${r.stderr}`;
  assert.equal(r.status, 1, where);
  assert.doesNotMatch(r.stderr, /^\s+at /m, where);
  assert.match(r.stderr, new RegExp(`^minigpt: [^\\n]*\\[${code}\\]\\n$`), where);
  assert.match(r.stderr, message, where);
  return r;
}

test('pull, then models, then rm', async () => {
  const pulled = await cli(['pull', 'tiny']);
  assert.equal(pulled.status, 0, pulled.stderr);
  const files = await ggufs();
  assert.equal(files.length, 2, files.join('\n'));
  for (const f of files) assert.ok(pulled.stdout.includes(f), `stdout names ${f}:\n${pulled.stdout}`);
  assert.match(pulled.stdout, /^tiny\n {2}model +\S+tiny-llama\.gguf \(\d/);
  // Not a terminal: plain lines, one when each file starts and one when it is done.
  assert.match(pulled.stderr, /tiny-llama\.gguf: downloading [\d.]+ kB from hf:test-org\/tiny-GGUF\/tiny-llama\.gguf#a{40}/);
  assert.match(pulled.stderr, /mmproj-tiny\.gguf: done/);
  assert.doesNotMatch(pulled.stderr, /\x1b\[/, 'no terminal escapes in a log');

  const again = await cli(['pull', 'tiny']);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(hub.requests.filter((r) => r.method === 'GET' && r.url.includes('/resolve/')).length, 1 + 1, 'the second pull fetched nothing');
  assert.equal(again.stdout, pulled.stdout);

  const listed = await cli(['models']);
  assert.equal(listed.status, 0, listed.stderr);
  assert.match(listed.stdout, /^\* tiny +[\d.]+ [kM]B, downloaded +MIT$/m);
  assert.match(listed.stdout, /^ {2}tiny-later +not downloadable yet +MIT$/m);
  assert.match(listed.stdout, /A tiny test model\./);
  assert.ok(listed.stdout.includes(`Cache (${cacheDir}): 2 files, `), listed.stdout);
  assert.match(listed.stdout, new RegExp(`kB  hf:test-org/tiny-GGUF/tiny-llama\\.gguf#${COMMIT}$`, 'm'));

  const removed = await cli(['rm', 'tiny']);
  assert.equal(removed.status, 0, removed.stderr);
  for (const f of files) assert.ok(removed.stdout.includes(`removed ${f}\n`), removed.stdout);
  assert.deepEqual(await ggufs(), []);
  assert.ok((await cli(['models'])).stdout.includes(`Cache (${cacheDir}): empty`));
  const none = await cli(['rm', 'tiny']);
  assert.equal(none.status, 0);
  assert.equal(none.stderr, 'minigpt rm: nothing of tiny is in the cache\n');
});

test('pull by hf: URI with --projector', async () => {
  const r = await cli(['pull', `hf:${REPO}/tiny-llama.gguf`, '--projector', `hf:${REPO}/mmproj-tiny.gguf`]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, / {2}model +\S+tiny-llama\.gguf/);
  assert.match(r.stdout, / {2}projector +\S+mmproj-tiny\.gguf/);
  assert.equal((await ggufs()).length, 2);
});

describe('describe with no --model uses the catalog default', () => {
  test('off a terminal without --yes: exit 2, one line saying to pass --yes, nothing downloaded', async () => {
    await usageError(['describe', fx.images.png], 'describe', /tiny is not downloaded yet \(2 files, [\d.]+ [kM]B\); pass --yes to download it, or get it first with 'minigpt pull tiny'/);
    assert.deepEqual(await filesUnder(cacheDir), []);
    assert.deepEqual(hub.requests, [], 'not a single request');
  });

  test('with --yes: says what it downloads, downloads it and answers as the library does', async () => {
    const args = ['describe', fx.images.png, '--yes', '--prompt', 'What is this?', '--temperature', '0', '--max-tokens', '12', '--threads', '2'];
    const r = await cli(args);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^minigpt: tiny is not downloaded yet: 2 files, [\d.]+ [kM]B into /);
    assert.ok(r.stderr.includes(`  hf:${REPO}/tiny-llama.gguf#${COMMIT} (`), r.stderr);
    assert.equal((await ggufs()).length, 2);

    const model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
    const image = await model.encodeImage(fx.images.png);
    const expected = await model.createSession().ask([image, 'What is this?'], { temperature: 0, maxTokens: 12 });
    await model.dispose();
    assert.ok(expected.length > 0);
    assert.equal(r.stdout, expected + '\n');

    // Cached now: no question, no request, nothing on stderr.
    hub.requests.length = 0;
    const again = await cli(args.filter((a) => a !== '--yes'));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.stdout, r.stdout);
    assert.equal(again.stderr, '');
    assert.deepEqual(hub.requests, []);
  });

  // A terminal, through util-linux's `script` (a pseudo-terminal); skipped where there is none.
  const hasScript = process.platform === 'linux' && existsSync('/usr/bin/script');
  test('on a terminal: asks (y/N); no downloads nothing, yes shows a bar with bytes, speed and ETA', { skip: !hasScript && 'no script(1)' }, async () => {
    const onTerminal = (answer) =>
      new Promise((resolve, reject) => {
        const command = [process.execPath, cliPath, 'describe', fx.images.png, '--max-tokens', '4', '--temperature', '0', '--threads', '2'].map((a) => `'${a}'`).join(' ');
        const child = spawn('script', ['-qfec', command, '/dev/null'], {
          stdio: ['pipe', 'pipe', 'pipe'],
          env: { ...process.env, MINIGPT_MODELS_DIR: cacheDir, HF_ENDPOINT: hub.endpoint, MINIGPT_CATALOG: catalog, MINIGPT_OFFLINE: '' },
        });
        let out = '';
        let sent = false;
        child.stdout.setEncoding('utf8').on('data', (d) => {
          out += d;
          if (!sent && out.includes('Download? [y/N] ')) {
            sent = true;
            child.stdin.write(`${answer}\r`);
          }
        });
        child.on('error', reject);
        child.on('close', (status) => resolve({ status, out }));
      });
    const no = await onTerminal('n');
    assert.equal(no.status, 1, no.out);
    assert.match(no.out, /tiny is not downloaded yet: 2 files/);
    assert.match(no.out, /minigpt: nothing downloaded; 'minigpt pull tiny' downloads it, --yes downloads without asking \[ERR_ABORTED\]/);
    assert.deepEqual(await ggufs(), []);
    const yes = await onTerminal('y');
    assert.equal(yes.status, 0, yes.out);
    assert.match(yes.out, /tiny-llama\.gguf \[[█░]+\] 100% \| [\d.]+ kB of [\d.]+ kB \| [\d.]+ [kMG]?B\/s \| ETA \d+:\d\d/);
    assert.equal((await ggufs()).length, 2);
  });

  test('--model takes a catalog name or an hf: URI, and --projector is then optional', async () => {
    const common = ['--prompt', 'Hi', '--temperature', '0', '--max-tokens', '4', '--threads', '2', '--yes'];
    const byName = await cli(['describe', fx.images.png, '--model', 'tiny', ...common]);
    assert.equal(byName.status, 0, byName.stderr);
    const byUri = await cli(['describe', fx.images.png, '--model', `hf:${REPO}/tiny-llama.gguf#${COMMIT}`, '--projector', `hf:${REPO}/mmproj-tiny.gguf#${COMMIT}`, ...common]);
    assert.equal(byUri.status, 0, byUri.stderr);
    assert.equal(byUri.stdout, byName.stdout);
  });
});

describe('failures', () => {
  test('a file the hub does not have: exit 1, one line', async () => {
    await runtimeError(['pull', `hf:${REPO}/missing.gguf`], 'ERR_DOWNLOAD', /404|not found/i);
    assert.deepEqual(await ggufs(), []);
  });

  test('offline and not cached: exit 1, one line naming what is missing, no request', async () => {
    await runtimeError(['pull', 'tiny', '--offline'], 'ERR_DOWNLOAD', /tiny-llama\.gguf/);
    await runtimeError(['describe', fx.images.png, '--yes'], 'ERR_DOWNLOAD', /MINIGPT_OFFLINE/, { env: { MINIGPT_OFFLINE: '1' } });
    assert.deepEqual(hub.requests, []);
  });

  test('Ctrl-C stops a pull with exit 130 and keeps the part, which the next pull resumes', async () => {
    const spec = `hf:${REPO}/slow.gguf#${COMMIT}`;
    const r = await cli(['pull', spec], {
      onStderr: (text, child) => {
        if (/downloading/.test(text) && !child.watching) {
          // Stop it once the first half is on disk.
          child.watching = setInterval(async () => {
            const parts = (await filesUnder(cacheDir)).filter((f) => f.endsWith('.part'));
            if (parts.length === 1 && (await stat(parts[0])).size > 0 && child.exitCode === null && !child.killed) {
              clearInterval(child.watching);
              child.kill('SIGINT');
            }
          }, 50);
          child.once('close', () => clearInterval(child.watching));
        }
      },
    });
    assert.equal(r.status, 130, r.stderr);
    assert.match(r.stderr, new RegExp(`minigpt pull: stopped; what was downloaded of ${spec.replace(/[.#]/g, '\\$&')} is kept in .+ and 'minigpt pull .+' resumes it\\n$`));
    const parts = (await filesUnder(cacheDir)).filter((f) => f.endsWith('.part'));
    assert.equal(parts.length, 1, (await filesUnder(cacheDir)).join('\n'));
    assert.ok(!existsSync(parts[0].slice(0, -'.part'.length)), 'no final file');

    hub.stall(`${REPO}/slow.gguf`, false);
    hub.requests.length = 0;
    try {
      const resumed = await cli(['pull', spec]);
      assert.equal(resumed.status, 0, resumed.stderr);
    } finally {
      hub.stall(`${REPO}/slow.gguf`, true);
    }
    const gets = hub.requests.filter((q) => q.method === 'GET');
    assert.equal(gets.length, 1);
    assert.match(gets[0].range ?? '', /^bytes=[1-9]\d*-$/, 'the second pull asked for the rest only');
    assert.equal((await ggufs()).length, 1);
  });
});

describe('usage errors: exit 2, one line naming the problem and --help', () => {
  test('pull, models and rm', async () => {
    await usageError(['pull'], 'pull', /missing the model to pull/);
    await usageError(['pull', 'tiny', 'tiny-later', '--projector', 'x.gguf'], 'pull', /--projector goes with one model/);
    await usageError(['pull', 'no-such-model'], 'pull', /"no-such-model" is neither a file nor a catalog model name \(known names: tiny, tiny-later\).*\[ERR_INVALID_ARGUMENT\]/);
    await usageError(['pull', 'tiny-later'], 'pull', /placeholder.*\[ERR_INVALID_ARGUMENT\]/);
    await usageError(['pull', 'hf:nope'], 'pull', /Invalid hf: URI/);
    await usageError(['pull', '--offlin', 'tiny'], 'pull', /unknown option '--offlin' \(did you mean '--offline'\?\)/);
    await usageError(['models', 'tiny'], 'models', /unexpected argument 'tiny'/);
    await usageError(['rm'], 'rm', /missing the model to remove/);
    await usageError(['describe', fx.images.png, '--model', 'no-such-model'], 'describe', /no-such-model/);
    await usageError(['describe', fx.images.png, '--model', fx.model], 'describe', /missing --projector <mmproj\.gguf>/);
    assert.deepEqual(hub.requests, []);
  });

  test('help lists the new commands', async () => {
    const r = await cli(['--help']);
    assert.equal(r.status, 0);
    for (const c of ['pull <name|uri>...', 'models', 'rm <name|uri>...']) assert.ok(r.stdout.includes(`minigpt ${c}`), r.stdout);
    for (const c of ['pull', 'models', 'rm']) {
      const h = await cli([c, '--help']);
      assert.equal(h.status, 0);
      assert.match(h.stdout, new RegExp(`^Usage:\\n  minigpt ${c}`));
    }
    assert.match((await cli(['describe', '--help'])).stdout, /-y, --yes/);
  });
});
