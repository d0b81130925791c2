// Runs one contender process and reports what it printed and its peak RSS. Native tools run
// under /usr/bin/time (its %M is the child's ru_maxrss, the same VmHWM a Node contender reads
// from /proc/self/status), so every contender's memory is measured the same way.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { RESULT_PREFIX } from './child.mjs';
import { root } from './models.mjs';

const TIME = '/usr/bin/time';
const RSS_MARK = 'BENCH_MAXRSS_KB ';

function run(cmd, args, { env, timeoutMs = 20 * 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A native tool under /usr/bin/time: { stdout, stderr, peakRssMiB, wallMs }. Throws on failure. */
export async function runTool(tool, args, options) {
  if (!existsSync(tool)) throw new Error(`${tool} is missing: run npm run build:native first`);
  const t0 = performance.now();
  const r = await run(TIME, ['-f', `${RSS_MARK}%M`, tool, ...args], options);
  const wallMs = performance.now() - t0;
  const m = new RegExp(`${RSS_MARK}(\\d+)`).exec(r.stderr);
  if (r.code !== 0) throw new Error(`${tool} exited with ${r.code ?? r.signal}: ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`);
  return { stdout: r.stdout, stderr: r.stderr, peakRssMiB: m ? Number(m[1]) / 1024 : NaN, wallMs };
}

/** A Node contender script in its own process; returns its BENCH_RESULT object plus its stderr. */
export async function runNode(script, settings, options) {
  const r = await run(process.execPath, [join(root, 'bench', 'contenders', script), JSON.stringify(settings)], options);
  const line = r.stdout.split('\n').reverse().find((l) => l.startsWith(RESULT_PREFIX));
  if (r.code !== 0 || !line) {
    const tail = (r.stderr + r.stdout).trim().split('\n').slice(-8).join('\n  ');
    throw new Error(`${script} failed (${r.code ?? r.signal}):\n  ${tail}`);
  }
  return { ...JSON.parse(line.slice(RESULT_PREFIX.length)), stderr: r.stderr };
}
