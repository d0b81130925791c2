#!/usr/bin/env node
// Leak check (issue 6, "Leaks and long runs"): N rounds (default 50) of load / encode / stream /
// dispose, with both kinds of projector (a libmtmd mmproj and our BLIP-2 one) and images, run
// under valgrind memcheck; the XML report is parsed and every leak is attributed by its stack.
//
//   node scripts/leak-check.mjs [--rounds 50] [--binary PATH] [--xml FILE] [--keep] [--verbose]
//   node scripts/leak-check.mjs --no-valgrind [--rounds 50]   # the same loop, RSS and malloc's bytes in use per round
//
// "Ours" is any leak whose allocation stack has a frame in the addon or the libraries it carries
// (minigpt.node, libllama, libggml*, libmtmd). Leaks whose stacks lie wholly in node, V8, libuv,
// ICU, OpenSSL, glibc's loader or sharp/libvips are reported as "not ours" and do not fail the
// run: node frees neither its isolate nor its platform at exit, so a process that does nothing
// already "leaks" there.
//
// Which binary: valgrind 3.19 cannot run AVX-512 instructions, and a local build
// (build/Release/minigpt.node, GGML_NATIVE) on an AVX-512 machine has them. The prebuild
// (prebuilds/<platform>-<arch>/, `npm run prebuild`) picks its CPU variant by CPUID, which
// valgrind reports without AVX-512, so it loads the haswell variant and runs. The prebuild is
// the default when present; --binary picks another (MINIGPT_NODE_BINARY is honoured too).
//
// Exit status: 0 when nothing is definitely lost in our code; 1 when something is; 2 when
// valgrind or the loop itself failed.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const OURS = /(^|\/)(minigpt\.node|libllama[^/]*\.so[^/]*|libggml[^/]*\.so[^/]*|libmtmd[^/]*\.so[^/]*)$/;

/** Writes the tiny random-weight fixtures the loop uses into `dir`; returns their paths. */
export async function writeLeakFixtures(dir, { nCtx = 1024 } = {}) {
  const { writeTinyLlama, writeTinyMmproj } = await import(pathToFileURL(join(root, 'tools', 'fixtures', 'models.js')).href);
  const { writeTinyBlip2 } = await import(pathToFileURL(join(root, 'tools', 'fixtures', 'blip2.js')).href);
  const { default: sharp } = await import('sharp');
  const { testPixels } = await import(pathToFileURL(join(root, 'test', 'helpers.js')).href);
  await mkdir(dir, { recursive: true });
  const paths = {
    model: join(dir, 'tiny-llama.gguf'),
    mmproj: join(dir, 'tiny-mmproj.gguf'),
    blip2: join(dir, 'tiny-blip2.gguf'),
    png: join(dir, 'picture.png'),
    rgb: join(dir, 'picture.rgb'),
    width: 40,
    height: 30,
  };
  await writeTinyLlama(paths.model, { nCtx });
  await writeTinyMmproj(paths.mmproj, { nEmbdText: 64 });
  await writeTinyBlip2(paths.blip2, { nEmbdText: 64 });
  const { width, height } = paths;
  const { data } = testPixels(width, height);
  await writeFile(paths.rgb, data);
  await sharp(data, { raw: { width, height, channels: 3 } }).png().toFile(paths.png);
  await writeFile(join(dir, 'fixtures.json'), JSON.stringify(paths));
  return paths;
}

async function drain(stream, limit = Infinity) {
  let n = 0;
  for await (const piece of stream) if (++n >= limit) break;
  return n;
}

/**
 * One round: both projectors, images as a file, as encoded bytes and as raw pixels, a full
 * stream, a second turn, a stream left by `break`, an aborted stream, and every way of
 * disposing (embedding, session, model with live sessions).
 */
export async function leakRound(api, fx) {
  const { loadModel } = api;
  const raw = { data: new Uint8Array(await readFile(fx.rgb)), width: fx.width, height: fx.height, channels: 3 };
  const greedy = { temperature: 0, maxTokens: 12 };

  // libmtmd (LLaVA-1.5 style mmproj)
  let model = await loadModel({ model: fx.model, projector: fx.mmproj, threads: 1 });
  let image = await model.encodeImage(fx.png);
  let session = model.createSession({ contextSize: 512 });
  if ((await drain(session.stream([image, 'What is it?'], greedy))) !== 12) throw new Error('short stream');
  await session.ask('And the colours?', { temperature: 0, maxTokens: 6 });
  await drain(session.stream([raw, 'Again?'], greedy), 2);  // broken out of after two pieces
  image.dispose();
  await session.dispose();
  const other = model.createSession({ contextSize: 256 });
  await drain(other.stream('Hello', { ...greedy, temperature: 0.8, seed: 7 }));
  await model.dispose();  // disposes `other` with it

  // BLIP-2 (our Q-Former projector on ggml)
  model = await loadModel({ model: fx.model, projector: fx.blip2, threads: 1 });
  image = await model.encodeImage(raw);
  session = model.createSession({ contextSize: 512 });
  if ((await drain(session.stream([image, 'What is this?'], greedy))) !== 12) throw new Error('short stream');
  const ac = new AbortController();
  let aborted = false;
  try {
    for await (const _ of session.stream([await readFile(fx.png), 'Describe it.'], { ...greedy, maxTokens: 100, signal: ac.signal })) ac.abort();
  } catch (err) {
    if (err?.code !== 'ERR_ABORTED') throw err;
    aborted = true;
  }
  if (!aborted) throw new Error('the stream was not aborted');
  await model.dispose();  // the session and the embedding go with it
}

/**
 * GC, then let node run finalizers from the event loop, three times: RSS is sampled after
 * this, not amid JS garbage. (Before 00a094c the addon also freed a disposed model, session or
 * embedding only when V8 collected the napi External that carried it into its JS wrapper.)
 */
export async function settle() {
  for (let k = 0; k < 3; k++) {
    globalThis.gc?.();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * malloc's own count of the bytes it has handed out and not had back, from the addon's
 * `nativeHeap()` (glibc's mallinfo2): null elsewhere, or with an older addon that lacks it. RSS
 * also moves with the free space glibc keeps in its arenas; this moves only with what is not freed.
 */
export function mallocInUse(addon) {
  const h = addon.nativeHeap?.() ?? null;
  return h ? h.inUse + h.mapped : null;
}

/** Child mode: the loop itself; one JSON line per round with the RSS after it. */
async function child(fixturesJson, rounds) {
  const fx = JSON.parse(await readFile(fixturesJson, 'utf8'));
  const api = await import(pathToFileURL(join(root, 'dist', 'index.js')).href);
  const { binding } = await import(pathToFileURL(join(root, 'dist', 'native', 'binding.js')).href);
  const heap = () => mallocInUse(binding());
  // sharp's own libvips operation cache (up to 50 MB and 100 operations by default) fills over
  // the first rounds; it is sharp's, bounded, and not what is measured here.
  (await import('sharp')).default.cache(false);
  for (let round = 1; round <= rounds; round++) {
    const t0 = performance.now();
    await leakRound(api, fx);
    await settle();
    const ms = Math.round(performance.now() - t0);
    process.stdout.write(JSON.stringify({ round, rss: process.memoryUsage().rss, heap: heap(), ms }) + '\n');
  }
}

// ---- valgrind XML --------------------------------------------------------------------------

const unescapeXml = (s) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
const tag = (xml, name) => {
  const m = xml.match(new RegExp(`<${name}>([\\s\\S]*?)</${name}>`));
  return m ? unescapeXml(m[1].trim()) : undefined;
};

/** Parses memcheck's --xml=yes output into { errors: [{ kind, bytes, blocks, what, frames }] }. */
export function parseValgrindXml(xml) {
  const errors = [];
  for (const m of xml.matchAll(/<error>([\s\S]*?)<\/error>/g)) {
    const body = m[1];
    const kind = tag(body, 'kind');
    const stackXml = body.match(/<stack>([\s\S]*?)<\/stack>/)?.[1] ?? '';
    const frames = [...stackXml.matchAll(/<frame>([\s\S]*?)<\/frame>/g)].map((f) => ({
      ip: tag(f[1], 'ip'), obj: tag(f[1], 'obj'), fn: tag(f[1], 'fn'), file: tag(f[1], 'file'), line: tag(f[1], 'line'), dir: tag(f[1], 'dir'),
    }));
    const what = tag(body, 'text') ?? tag(body, 'what');
    errors.push({
      kind,
      bytes: Number(tag(body, 'leakedbytes') ?? 0),
      blocks: Number(tag(body, 'leakedblocks') ?? 0),
      what,
      frames,
    });
  }
  return { errors };
}

export const isOurFrame = (f) => !!f.obj && OURS.test(f.obj);
export const isOurs = (e) => e.frames.some(isOurFrame);

function frameText(f) {
  const where = f.file ? ` (${f.file}${f.line ? `:${f.line}` : ''})` : '';
  const obj = f.obj ? ` [${f.obj.split('/').pop()}]` : '';
  return `${f.fn ?? f.ip}${where}${obj}`;
}

/** Sums leaks by kind and owner; returns { table, ourLeaks, ourOther }. */
export function summarize({ errors }) {
  const table = {};
  const ourLeaks = [];
  const ourOther = [];
  for (const e of errors) {
    const ours = isOurs(e);
    if (e.kind?.startsWith('Leak_')) {
      const row = (table[e.kind] ??= { ours: { bytes: 0, blocks: 0, records: 0 }, others: { bytes: 0, blocks: 0, records: 0 } });
      const cell = row[ours ? 'ours' : 'others'];
      cell.bytes += e.bytes;
      cell.blocks += e.blocks;
      cell.records += 1;
      if (ours) ourLeaks.push(e);
    } else if (ours) {
      ourOther.push(e);
    }
  }
  return { table, ourLeaks, ourOther };
}

function printStack(e, indent = '    ', max = 24) {
  for (const f of e.frames.slice(0, max)) console.log(`${indent}${frameText(f)}`);
  if (e.frames.length > max) console.log(`${indent}... ${e.frames.length - max} more`);
}

// ---- driver ------------------------------------------------------------------------------

function parseArgs(argv) {
  const o = { rounds: 50, keep: false, verbose: false, valgrind: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--rounds') o.rounds = Number(argv[++i]);
    else if (a === '--binary') o.binary = resolve(argv[++i]);
    else if (a === '--xml') o.xml = resolve(argv[++i]);
    else if (a === '--keep') o.keep = true;
    else if (a === '--verbose') o.verbose = true;
    else if (a === '--no-valgrind') o.valgrind = false;
    else if (a === '--child') { o.child = argv[++i]; o.rounds = Number(argv[++i]); }
    else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new Error('--rounds must be a positive integer');
  return o;
}

function runChild(cmd, args, env, onLine) {
  return new Promise((resolvePromise, reject) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('error', reject);
    p.on('close', (code, signal) => resolvePromise({ code, signal, stderr }));
  });
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.child) return child(o.child, o.rounds);

  const dir = await mkdtemp(join(tmpdir(), 'minigpt-leak-'));
  try {
    await writeLeakFixtures(dir);
    const prebuild = join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'minigpt.node');
    const binary = o.binary ?? process.env.MINIGPT_NODE_BINARY ?? (existsSync(prebuild) ? prebuild : undefined);
    // As test/native/long-run.test.js: glibc's malloc pinned (arenas, mmap threshold), so that
    // --no-valgrind RSS figures mean something; valgrind's own allocator ignores these.
    const env = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072', ...process.env };
    if (binary) env.MINIGPT_NODE_BINARY = binary;
    const xml = o.xml ?? join(dir, 'memcheck.xml');
    const childArgs = ['--expose-gc', '--max-semi-space-size=1', fileURLToPath(import.meta.url), '--child', join(dir, 'fixtures.json'), String(o.rounds)];
    let cmd = process.execPath;
    let args = childArgs;
    if (o.valgrind) {
      cmd = 'nice';
      args = [
        '-n', '10', 'valgrind', '--tool=memcheck', '--leak-check=full', '--show-leak-kinds=all',
        '--errors-for-leak-kinds=definite', '--num-callers=40', '--xml=yes', `--xml-file=${xml}`,
        process.execPath, ...childArgs,
      ];
    }
    console.log(`leak-check: ${o.rounds} rounds of load / encode / stream / dispose (mmproj + BLIP-2)${o.valgrind ? ' under valgrind memcheck' : ''}`);
    console.log(`  binary: ${binary ?? '(default: the local build)'}`);
    const t0 = Date.now();
    const rss = [];
    const heap = [];
    const mb = (bytes) => (bytes / 1048576).toFixed(1);
    const res = await runChild(cmd, args, env, (line) => {
      try {
        const r = JSON.parse(line);
        rss.push(r.rss);
        heap.push(r.heap);
        const inUse = r.heap == null ? '' : `, malloc in use ${mb(r.heap)} MB`;
        if (o.verbose || r.round === 1 || r.round % 10 === 0) console.log(`  round ${r.round}: RSS ${mb(r.rss)} MB${inUse}, ${r.ms} ms`);
      } catch {
        console.log(`  ${line}`);
      }
    });
    const secs = ((Date.now() - t0) / 1000).toFixed(0);
    if (res.code !== 0 || rss.length !== o.rounds) {
      console.error(res.stderr.slice(-4000));
      console.error(`leak-check: the loop failed (exit ${res.code ?? res.signal}, ${rss.length}/${o.rounds} rounds) after ${secs} s`);
      if (/unhandled instruction|SIGILL/i.test(res.stderr)) console.error('valgrind met an instruction it cannot run (AVX-512?): use the prebuild (npm run prebuild) or --binary with a non-native build');
      process.exitCode = 2;
      return;
    }
    console.log(`  ${o.rounds} rounds in ${secs} s; RSS after round 1 ${mb(rss[0])} MB, after round ${o.rounds} ${mb(rss.at(-1))} MB (${(((rss.at(-1) / rss[0]) - 1) * 100).toFixed(1)}%${o.valgrind ? ', under valgrind' : ''})`);
    // Under valgrind its own allocator replaces malloc, and mallinfo2 reports nothing useful.
    if (!o.valgrind && heap[0] != null && heap.at(-1) != null) {
      console.log(`  malloc in use after round 1 ${mb(heap[0])} MB, after round ${o.rounds} ${mb(heap.at(-1))} MB (${heap.at(-1) >= heap[0] ? '+' : ''}${mb(heap.at(-1) - heap[0])} MB)`);
    }
    if (!o.valgrind) return;

    const { table, ourLeaks, ourOther } = summarize(parseValgrindXml(await readFile(xml, 'utf8')));
    const kinds = ['Leak_DefinitelyLost', 'Leak_IndirectlyLost', 'Leak_PossiblyLost', 'Leak_StillReachable'];
    console.log('\n  kind                 ours (minigpt.node/llama/ggml/mtmd)   not ours (node/V8/libc/sharp)');
    for (const k of kinds) {
      const row = table[k] ?? { ours: { bytes: 0, blocks: 0, records: 0 }, others: { bytes: 0, blocks: 0, records: 0 } };
      const fmt = (c) => `${c.bytes} bytes in ${c.blocks} blocks`.padEnd(38);
      console.log(`  ${k.replace('Leak_', '').padEnd(20)} ${fmt(row.ours)}${fmt(row.others).trim()}`);
    }
    const definite = ourLeaks.filter((e) => e.kind === 'Leak_DefinitelyLost' || e.kind === 'Leak_IndirectlyLost');
    for (const e of definite.sort((a, b) => b.bytes - a.bytes)) {
      console.log(`\n  ${e.kind}: ${e.what}`);
      printStack(e);
    }
    if (o.verbose) {
      // Still reachable at exit: globals (backend registry, logger, caches). Compare a short
      // run with a long one: a figure that grows with the rounds is an accumulation.
      const reachable = ourLeaks.filter((e) => e.kind === 'Leak_StillReachable' || e.kind === 'Leak_PossiblyLost');
      for (const e of reachable.sort((a, b) => b.bytes - a.bytes).slice(0, 8)) {
        console.log(`\n  ${e.kind}: ${e.what}`);
        printStack(e, '    ', 10);
      }
    }
    if (ourOther.length) {
      console.log(`\n  ${ourOther.length} memory error(s) other than leaks with a frame in our code:`);
      for (const e of ourOther.slice(0, 10)) {
        console.log(`\n  ${e.kind}: ${e.what}`);
        printStack(e, '    ', 12);
      }
    }
    const lost = table.Leak_DefinitelyLost?.ours.bytes ?? 0;
    console.log(`\nleak-check: ${lost} bytes definitely lost in our code${o.keep || o.xml ? ` (report: ${xml})` : ''}`);
    if (lost > 0) process.exitCode = 1;
  } finally {
    if (!o.keep) await rm(dir, { recursive: true, force: true });
    else console.log(`  fixtures kept in ${dir}`);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err);
    process.exitCode = 2;
  });
}
