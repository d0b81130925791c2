/**
 * Download progress: bytes, a speed over the last seconds and the time left, at most every
 * 100 ms (and once at the end) so a fast download does not flood the callback.
 * @module
 */

/** What `onProgress` receives while a file downloads. */
export interface DownloadProgress {
  /** The file being written (its final path in the cache). */
  file: string;
  /** The canonical URI of the file. */
  uri: string;
  /** Bytes of the file on disk so far, including those of a resumed part. */
  receivedBytes: number;
  /** The file's size, when known. */
  totalBytes?: number;
  /** Bytes per second over the last few seconds. */
  bytesPerSecond: number;
  /** Seconds left at that speed, when the size is known and the speed is not zero. */
  etaSeconds?: number;
}

const WINDOW_MS = 5_000;
const EVERY_MS = 100;

export class ProgressMeter {
  #samples: Array<[number, number]> = [];
  #last = 0;
  #received: number;

  constructor(
    private readonly file: string,
    private readonly uri: string,
    start: number,
    private total: number | undefined,
    private readonly onProgress: ((p: DownloadProgress) => void) | undefined,
  ) {
    this.#received = start;
    this.#samples.push([performance.now(), start]);
  }

  setTotal(total: number | undefined): void {
    if (total !== undefined) this.total = total;
  }

  /** Bytes now on disk (a restart lowers it). */
  set(received: number, final = false): void {
    this.#received = received;
    if (!this.onProgress) return;
    const now = performance.now();
    if (!final && now - this.#last < EVERY_MS) return;
    this.#last = now;
    this.#samples.push([now, received]);
    while (this.#samples.length > 2 && now - this.#samples[0]![0] > WINDOW_MS) this.#samples.shift();
    const [t0, b0] = this.#samples[0]!;
    const speed = now > t0 && received >= b0 ? ((received - b0) * 1000) / (now - t0) : 0;
    const p: DownloadProgress = { file: this.file, uri: this.uri, receivedBytes: received, totalBytes: this.total, bytesPerSecond: Math.round(speed) };
    if (this.total !== undefined && speed > 0) p.etaSeconds = Math.max(0, (this.total - received) / speed);
    this.onProgress(p);
  }

  get received(): number {
    return this.#received;
  }
}
