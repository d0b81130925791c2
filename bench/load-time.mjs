// Model load time, cold and warm, through our loadModel (model + projector).
//
// "Cold" here: the files' pages are dropped from the page cache first with
// posix_fadvise(POSIX_FADV_DONTNEED) (GNU dd iflag=nocache), which needs no root and touches no
// other file; fincore confirms nothing of them stays resident. On a virtual machine the host
// may still hold the disk image in its own cache, so cold means "not in this kernel's page
// cache", not "read from the platter". "Warm": the same load again right after, every page
// cached; with mmap (the default) loading is then mostly mapping and page-table work.
import { execFileSync } from 'node:child_process';
import { runNode } from './spawn.mjs';

function resident(file) {
  try {
    return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
  } catch {
    return NaN;
  }
}

function evict(file) {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** { cold: [ms], warm: [ms], residentBeforeCold: [bytes] } over `runs` cold/warm pairs. */
export async function loadTimes({ model, projector, threads, ctx, runs }) {
  const out = { cold: [], warm: [], residentBeforeCold: [] };
  const settings = { model, projector, workload: 'load-image', threads, ctx };
  for (let r = 0; r < runs; r++) {
    evict(model);
    evict(projector);
    out.residentBeforeCold.push(resident(model) + resident(projector));
    out.cold.push((await runNode('ours.mjs', settings)).loadMs);
    out.warm.push((await runNode('ours.mjs', settings)).loadMs);
  }
  return out;
}
