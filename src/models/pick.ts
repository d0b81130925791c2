/**
 * Which files of a repo `hf:<owner>/<repo>:<quant>` means: llama.cpp's choice for `-hf`
 * (common/download.cpp `find_best_model`, `find_best_sibling`, at the pinned commit), so a
 * name picks the same files here as in llama-server.
 * @module
 */
import type { HubFile } from './hub.js';

interface SplitInfo { prefix: string; tag: string; index: number; count: number }

function splitInfo(path: string): SplitInfo | undefined {
  if (!path.endsWith('.gguf')) return undefined;
  let prefix = path.slice(0, -5);
  let index = 1;
  let count = 1;
  const m = /^(.+)-([0-9]{5})-of-([0-9]{5})$/i.exec(prefix);
  if (m) {
    prefix = m[1]!;
    index = Number(m[2]);
    count = Number(m[3]);
  }
  const t = /[-.]([A-Z0-9_]+)$/i.exec(prefix);
  return { prefix, tag: t ? t[1]!.toUpperCase() : '', index, count };
}

/** Q4_0 -> 4, F16 -> 16, Q8_K_M -> 8. */
function quantBits(tag: string): number {
  const m = /[0-9]+/.exec(tag);
  return m ? Number(m[0]) : 0;
}

function isModelFile(path: string): boolean {
  if (!path.endsWith('.gguf')) return false;
  const name = path.slice(path.lastIndexOf('/') + 1);
  return !['mmproj', 'imatrix', 'mtp-', 'eagle3-', 'dflash-', 'dspark-'].some((k) => name.includes(k));
}

/** A split GGUF's other parts (-0000N-of-0000M), which llama.cpp loads beside the first. */
export function isSplit(path: string): boolean {
  return (splitInfo(path)?.count ?? 1) > 1;
}

/** The model file for `tag` (default Q4_K_M, then Q8_0, then the first GGUF). */
export function pickModel(files: readonly HubFile[], tag: string | undefined): HubFile | undefined {
  const tags = tag ? [tag] : ['Q4_K_M', 'Q8_0'];
  const firstPart = (f: HubFile) => {
    const s = splitInfo(f.path);
    return !(s && s.count > 1 && s.index !== 1);
  };
  for (const t of tags) {
    const re = new RegExp(`${t}[.-]`, 'i');
    const hit = files.find((f) => isModelFile(f.path) && re.test(f.path) && firstPart(f));
    if (hit) return hit;
  }
  if (!tag) return files.find((f) => isModelFile(f.path) && firstPart(f));
  return undefined;
}

/**
 * The mmproj beside `model`: the deepest shared directory first, then a quant named exactly
 * as `tag`, then the closest bit width (to `tag`, else to the model's own quant).
 */
export function pickProjector(files: readonly HubFile[], model: string, tag?: string): HubFile | undefined {
  const tagUpper = tag?.toUpperCase() ?? '';
  const modelBits = tagUpper ? quantBits(tagUpper) : quantBits(splitInfo(model)?.tag ?? '');
  const modelDir = model.split('/').slice(0, -1);
  let best: HubFile | undefined;
  let bestDepth = 0;
  let bestDiff = 0;
  let bestExact = false;
  for (const f of files) {
    if (!f.path.endsWith('.gguf') || !f.path.includes('mmproj')) continue;
    const dir = f.path.split('/').slice(0, -1);
    let depth = 0;
    while (depth < modelDir.length && depth < dir.length && modelDir[depth] === dir[depth]) depth++;
    if (depth !== dir.length) continue;  // only files in the model's directory or above it
    const diff = Math.abs(quantBits(splitInfo(f.path)?.tag ?? '') - modelBits);
    const exact = tagUpper !== '' && f.path.toUpperCase().includes(`-${tagUpper}.`);
    if (!best || depth > bestDepth || (depth === bestDepth && exact && !bestExact) || (depth === bestDepth && exact === bestExact && diff < bestDiff)) {
      best = f;
      bestDepth = depth;
      bestDiff = diff;
      bestExact = exact;
    }
  }
  return best;
}
