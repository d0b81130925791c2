// Issue 15, item 3: a model file truncated while it is mapped. Truncating it after the load
// kills the process with SIGBUS on the next read of a lost page (documented beside useMmap,
// shown here in a child process); truncating it before the first use, while it loads, is a
// ModelLoadError, and the native model is disposed.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rename, rm, truncate, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { readGgufHeader } from '../../dist/gguf/read.js';
import { checkLoadedFiles, requiredFileSize } from '../../dist/load-plan/loaded-files-check.js';
import { writeTinyLlama, writeTinyMmproj } from '../../tools/fixtures/models.js';
import { root } from '../helpers.js';

let dir, good, mmproj;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'minigpt-truncated-'));
  good = join(dir, 'good.gguf');
  mmproj = join(dir, 'mmproj.gguf');
  await writeTinyLlama(good);
  await writeTinyMmproj(mmproj, { nEmbdText: 64 });
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function copy(from = good) {
  const file = join(dir, `copy${n++}.gguf`);
  await copyFile(from, file);
  return file;
}

/** The files as the load plan describes them (src/load-plan/plan.ts). */
function planned(modelPath, header, projectorPath, projectorHeader) {
  const files = [{ path: modelPath, what: 'Model', code: 'ERR_MODEL_LOAD', fileId: header.fileId, requiredSize: requiredFileSize(header) }];
  if (projectorPath) files.push({ path: projectorPath, what: 'Projector', code: 'ERR_PROJECTOR_LOAD', fileId: projectorHeader.fileId, requiredSize: requiredFileSize(projectorHeader) });
  return files;
}

function fakeNative() {
  const native = { disposed: 0, dispose: () => void native.disposed++ };
  return native;
}

test('a file shorter after the load than its tensors need is ERR_MODEL_LOAD / ERR_PROJECTOR_LOAD, after disposing', async () => {
  const model = await copy();
  const projector = await copy(mmproj);
  const header = await readGgufHeader(model);
  const projectorHeader = await readGgufHeader(projector);
  assert.equal(requiredFileSize(header), header.fileSize); // the writer adds no tail

  const whole = fakeNative();
  await checkLoadedFiles(whole, planned(model, header, projector, projectorHeader));
  assert.equal(whole.disposed, 0);

  await truncate(model, header.fileSize - 1);
  const cut = fakeNative();
  await assert.rejects(checkLoadedFiles(cut, planned(model, header)), {
    name: 'ModelLoadError',
    code: 'ERR_MODEL_LOAD',
    message: new RegExp(`Model file .* shrank to ${header.fileSize - 1} bytes while it was being loaded, but its tensors need ${header.fileSize}`),
  });
  assert.equal(cut.disposed, 1);

  await truncate(projector, 100);
  const cutProjector = fakeNative();
  await assert.rejects(checkLoadedFiles(cutProjector, planned(await copy(), header, projector, projectorHeader)), { code: 'ERR_PROJECTOR_LOAD', message: /Projector file .* shrank to 100 bytes/ });
  assert.equal(cutProjector.disposed, 1);
});

test('a file deleted or replaced under its name after the load is not an error: the mapping keeps the old one', async () => {
  const model = await copy();
  const header = await readGgufHeader(model);
  await unlink(model);
  await checkLoadedFiles(fakeNative(), planned(model, header));
  // Renamed over by a shorter file: the loaded file is another inode, still whole.
  const other = await copy();
  await truncate(other, 1000);
  const model2 = await copy();
  const header2 = await readGgufHeader(model2);
  await rename(other, model2);
  const native = fakeNative();
  await checkLoadedFiles(native, planned(model2, header2));
  assert.equal(native.disposed, 0);
});

/** Runs `script` (ES module source) in a child node; resolves with { code, signal, stdout }. */
function child(script) {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { cwd: root, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err?.code ?? 0, signal: err?.signal ?? null, stdout, stderr });
    });
  });
}

const api = JSON.stringify(join(root, 'dist', 'index.js'));

for (const useMmap of [true, false]) {
  test(`a model truncated while it loads (useMmap: ${useMmap}) is ERR_MODEL_LOAD, not a crash`, { timeout: 60_000 }, async () => {
    // In a child: if this sequence could SIGBUS, it must not take the test runner with it.
    const model = await copy();
    const r = await child(`
      import { truncateSync } from 'node:fs';
      const { loadModel } = await import(${api});
      let cut = false;
      try {
        const m = await loadModel({ model: ${JSON.stringify(model)}, threads: 1, useMmap: ${useMmap}, onProgress: () => {
          if (!cut) { cut = true; truncateSync(${JSON.stringify(model)}, 4096); }
        } });
        console.log('loaded', cut);
        await m.dispose();
      } catch (err) {
        console.log(err.code, err.message);
      }
    `);
    assert.equal(r.signal, null, r.stderr.slice(-2000));
    assert.match(r.stdout, /^ERR_MODEL_LOAD /m, r.stdout + r.stderr.slice(-2000));
  });
}

test('truncating a mapped model after the load kills the process with SIGBUS (why useMmap documents it)', { skip: process.platform === 'win32' && 'Windows refuses to truncate a mapped file', timeout: 60_000 }, async () => {
  const model = await copy();
  const r = await child(`
    import { truncateSync } from 'node:fs';
    const { loadModel } = await import(${api});
    const m = await loadModel({ model: ${JSON.stringify(model)}, threads: 1 });
    truncateSync(${JSON.stringify(model)}, 4096);
    await m.createSession({ template: 'none' }).ask('Hello', { maxTokens: 2 });
    console.log('survived');
  `);
  assert.equal(r.signal, 'SIGBUS', `${r.stdout} ${r.stderr.slice(-1000)}`);
});
