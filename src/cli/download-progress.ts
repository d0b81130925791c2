/**
 * @internal
 * What the download commands show on stderr: a bar per file (bytes, speed, ETA) on a terminal,
 * a few plain lines otherwise (a log or CI keeps every line, so not one per chunk), and the
 * plan of what is about to be downloaded and how big.
 */
import { basename } from 'node:path';
import type { DownloadProgress, ModelFile, ResolvedModel } from '../models/index.js';

/** Bytes in decimal units, as the Hugging Face hub shows them: "436.8 MB". */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 1000) return `${Math.max(0, Math.round(n))} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = n / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** "1:05", "1:02:03"; '?' when unknown. */
function formatEta(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${rest}` : `${minutes}:${rest}`;
}

/** Whether this file of a plan still has to come over the network (not cached, not a local path). */
export function needsDownload(file: ModelFile | undefined): file is ModelFile {
  return file !== undefined && !file.cached && /^(hf:|https?:)/i.test(file.uri);
}

/** The files of `plan` still to download, and their total size when every size is known. */
export function missingFiles(plan: ResolvedModel): { files: ModelFile[]; bytes: number | undefined } {
  const files = [plan.model, plan.projector].filter(needsDownload);
  const bytes = files.every((f) => f.size !== undefined) ? files.reduce((sum, f) => sum + (f.size ?? 0), 0) : undefined;
  return { files, bytes };
}

/** "2 files, 545.6 MB" (or "of unknown size"). */
export function sizeSummary({ files, bytes }: { files: ModelFile[]; bytes: number | undefined }): string {
  const count = files.length === 1 ? '1 file' : `${files.length} files`;
  return bytes === undefined ? `${count} of unknown size` : `${count}, ${formatBytes(bytes)}`;
}

/** The lines that say what is about to be downloaded, where from and how big. */
export function planLines(name: string, plan: ResolvedModel, cacheDir: string): string {
  const missing = missingFiles(plan);
  const lines = [`minigpt: ${name} is not downloaded yet: ${sizeSummary(missing)} into ${cacheDir}`];
  for (const f of missing.files) lines.push(`  ${f.uri}${f.size === undefined ? '' : ` (${formatBytes(f.size)})`}`);
  return lines.join('\n') + '\n';
}

export interface ProgressView {
  onProgress: (p: DownloadProgress) => void;
  /** Ends the current bar (or line); call once the downloads are over, failed or not. */
  stop: () => void;
}

/**
 * A progress display on `stream`: a cli-progress bar per file when it is a terminal, else a
 * line when a file starts, at each quarter and when it ends.
 */
export async function progressView(stream: NodeJS.WriteStream = process.stderr): Promise<ProgressView> {
  if (!stream.isTTY) return plainView(stream);
  const { default: cliProgress } = await import('cli-progress');
  let bar: InstanceType<typeof cliProgress.SingleBar> | undefined;
  let current: string | undefined;
  const stop = () => {
    bar?.stop();
    bar = undefined;
    current = undefined;
  };
  return {
    stop,
    onProgress(p) {
      const total = p.totalBytes ?? 0;
      const payload = {
        file: basename(p.file),
        received: formatBytes(p.receivedBytes),
        size: p.totalBytes === undefined ? '?' : formatBytes(p.totalBytes),
        speed: `${formatBytes(p.bytesPerSecond)}/s`,
        left: formatEta(p.etaSeconds),
      };
      if (current !== p.file) {
        stop();
        current = p.file;
        bar = new cliProgress.SingleBar(
          {
            format:
              p.totalBytes === undefined
                ? '{file} {received} | {speed}'
                : '{file} [{bar}] {percentage}% | {received} of {size} | {speed} | ETA {left}',
            stream,
            hideCursor: true,
            barsize: 24,
            // The numbers are ours (the downloader's own speed and ETA), not cli-progress's guesses.
            etaBuffer: 1,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, p.receivedBytes, payload);
        return;
      }
      bar?.update(Math.min(p.receivedBytes, total || p.receivedBytes), payload);
    },
  };
}

function plainView(stream: NodeJS.WriteStream): ProgressView {
  let current: string | undefined;
  let quarter = 0;
  let finished = false;
  const line = (p: DownloadProgress, what: string) =>
    stream.write(`minigpt: ${basename(p.file)}: ${what}\n`);
  return {
    stop() {
      current = undefined;
    },
    onProgress(p) {
      if (current !== p.file) {
        current = p.file;
        quarter = 0;
        finished = false;
        line(p, `downloading ${p.totalBytes === undefined ? '(size unknown)' : formatBytes(p.totalBytes)} from ${p.uri}`);
      }
      if (p.totalBytes === undefined || p.totalBytes === 0 || finished) return;
      if (p.receivedBytes >= p.totalBytes) {
        finished = true;
        line(p, `done, ${formatBytes(p.totalBytes)}`);
        return;
      }
      const reached = Math.floor((4 * p.receivedBytes) / p.totalBytes);
      if (reached > quarter) {
        quarter = reached;
        line(p, `${25 * reached}% (${formatBytes(p.receivedBytes)} of ${formatBytes(p.totalBytes)}, ${formatBytes(p.bytesPerSecond)}/s, ETA ${formatEta(p.etaSeconds)})`);
      }
    },
  };
}
