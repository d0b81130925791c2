// The PyTorch reference of the BLIP-2 projector (test/reference/blip2_reference.py, Debian's
// python3-torch), timed on the real EVA ViT-g/14 + Q-Former shape. Real-size float64 weights
// would need 8 GB, so the script times ViT depths 1 and 3 in float32 and extrapolates to 39.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cacheDir, root } from './models.mjs';

/** { ms, per_vit_block_ms, measured_depths } or null (with the reason on stderr) when torch is missing. */
export async function torchEncode({ threads, runs = 1, outputLength = 64 }) {
  const config = join(cacheDir, `torch-config-${outputLength}.json`);
  writeFileSync(config, JSON.stringify({ 'projection.output_length': outputLength }));
  try {
    const { stdout } = await promisify(execFile)('/usr/bin/python3', [join(root, 'test', 'reference', 'blip2_reference.py'), 'bench', '--config', config, '--threads', String(threads), '--runs', String(runs)], { maxBuffer: 1 << 20 });
    return JSON.parse(stdout.trim().split('\n').pop());
  } catch (err) {
    process.stderr.write(`PyTorch reference not run: ${err.message.split('\n')[0]}\n`);
    return null;
  }
}
