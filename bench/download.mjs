// Download throughput (issue 16): pullModel fetching a 1 GiB file from the local stand-in for
// the hub (tools/fixtures/fake-hub.js: resolve -> 302 -> "CDN" on another port), beside curl
// fetching the same URL, which is the ceiling. Not a timed test: run `npm run bench:download`
// (after `npm run build:ts`); MB=<n> changes the size. All write to the same disk; ours also
// hashes (sha256) and fsyncs before the rename, bare curl does neither, so a third row does the
// same work with curl, tee, sha256sum and sync. Each is run over loopback at full speed (what bounds
// it is CPU: this machine's cores are shared with the server) and over a paced "link"
// (LINK_MBPS, default 200 MB/s, about a 1.6 Gbit/s line: what bounds it is the link, as on a real
// download from the hub); LINK_MBPS=0 runs loopback only.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startFakeHub } from '../tools/fixtures/fake-hub.js';

const run = promisify(execFile);
const MB = Number(process.env.MB ?? 1024);
const LINK_MBPS = Number(process.env.LINK_MBPS ?? 200);
const dir = await mkdtemp(join(tmpdir(), 'minigpt-bench-dl-'));
const source = join(dir, 'big.gguf');
try {
  const block = randomBytes(1 << 20);
  const fh = await open(source, 'w');
  for (let i = 0; i < MB; i++) {
    block[0] = i & 255;  // no two blocks alike
    await fh.write(block);
  }
  await fh.close();
  const hub = await startFakeHub({ repos: { 'bench/big': { commit: 'c'.repeat(40), files: { 'big-Q8_0.gguf': source } } } });
  const url = `${hub.endpoint}/bench/big/resolve/main/big-Q8_0.gguf`;
  const timed = async (cmd) => {
    const { stderr } = await run('bash', ['-c', `TIMEFORMAT='%R %U %S'; time ${cmd} >/dev/null`], { maxBuffer: 1 << 24 });
    const [real, user, sys] = stderr.trim().split('\n').pop().split(' ').map(Number);
    return { seconds: real, cpuSeconds: +(user + sys).toFixed(2), mbPerSecond: Math.round((MB * 1.048576) / real) };
  };
  const results = [];
  for (const link of LINK_MBPS ? [0, LINK_MBPS] : [0]) {
    hub.behaviour.bytesPerSecond = link * 1e6;
    const where = link ? `${link} MB/s link` : 'loopback';
    for (let round = 0; round < 2; round++) {
      const curlOut = join(dir, `curl-${round}.bin`);
      results.push({ where, tool: 'curl -L', round, ...(await timed(`curl -sSL -o ${curlOut} ${url}`)) });
      await rm(curlOut);
      // The same work as ours: hashed while it arrives, on disk (fsync) before it counts.
      results.push({ where, tool: 'curl | tee | sha256sum; sync', round, ...(await timed(`bash -c 'set -o pipefail; curl -sSL ${url} | tee ${curlOut} | sha256sum && sync ${curlOut}'`)) });
      await rm(curlOut);
      const cache = join(dir, `cache-${round}`);
      const script = join(dir, 'pull.mjs');
      await writeFile(script, `import { pullModel } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
        await pullModel({ model: 'hf:bench/big/big-Q8_0.gguf' }, { endpoint: ${JSON.stringify(hub.endpoint)}, cacheDir: ${JSON.stringify(cache)}, token: '' });`);
      results.push({ where, tool: 'pullModel (sha256 + fsync)', round, ...(await timed(`${process.execPath} ${script}`)) });
      await rm(cache, { recursive: true });
    }
  }
  await hub.close();
  console.table(results);
  for (const where of new Set(results.map((r) => r.where))) {
    const best = (tool) => Math.max(...results.filter((r) => r.where === where && r.tool.startsWith(tool)).map((r) => r.mbPerSecond));
    console.log(
      `${MB} MiB over ${where}: pullModel ${best('pullModel')} MB/s, curl ${best('curl -L')} MB/s: ${(best('pullModel') / best('curl -L')).toFixed(2)}x curl; ` +
        `curl with sha256sum and sync ${best('curl |')} MB/s: ${(best('pullModel') / best('curl |')).toFixed(2)}x`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
