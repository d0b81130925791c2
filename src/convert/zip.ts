/**
 * @internal
 * A read-only zip reader just big enough for `torch.save` archives: it reads the central
 * directory (zip64 included, for files over 4 GiB), then reads single entries, or byte
 * ranges of STORED entries, on demand. DEFLATE entries are inflated whole with node:zlib.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants as bufferConstants } from 'node:buffer';
import { inflateRawSync } from 'node:zlib';
import { ModelLoadError } from '../errors.js';
import { loadError, readExactly } from './file-range.js';

/** One file inside the archive. */
export interface ZipEntry {
  readonly name: string;
  /** 0 = STORED, 8 = DEFLATE. */
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;

/** A zip archive opened for random access. Call {@link ZipArchive.close} when done. */
export class ZipArchive {
  private readonly dataStarts = new Map<string, number>();
  private inflated: { name: string; bytes: Uint8Array } | undefined;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    /** Entries by name, in central-directory order. */
    readonly entries: ReadonlyMap<string, ZipEntry>,
  ) {}

  /** Open `path` and read its central directory. */
  static async open(path: string): Promise<ZipArchive> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw loadError(path, err);
    }
    try {
      const entries = await readCentralDirectory(fh, path);
      return new ZipArchive(path, fh, entries);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    this.inflated = undefined;
    await this.fh.close();
  }

  /** `length` bytes of the entry's uncompressed content, starting at `offset`. */
  async read(entry: ZipEntry, offset = 0, length = entry.size - offset): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > entry.size) {
      throw this.bad(`a read of ${length} bytes at ${offset} lies outside "${entry.name}" (${entry.size} bytes)`);
    }
    if (entry.method === 0) {
      return readExactly(this.fh, (await this.dataStart(entry)) + offset, length, this.path);
    }
    if (entry.method !== 8) throw this.bad(`"${entry.name}" uses compression method ${entry.method}; only STORED and DEFLATE are supported`);
    // A deflate stream cannot be entered in the middle: inflate the entry once and keep
    // the last one, since the tensors of one storage are usually read one after another.
    if (this.inflated?.name !== entry.name) {
      const raw = await readExactly(this.fh, await this.dataStart(entry), entry.compressedSize, this.path);
      let bytes: Uint8Array;
      try {
        // Capping the output at the declared size stops a small hostile entry (a zip bomb)
        // from inflating into gigabytes before the size check below can refuse it.
        bytes = new Uint8Array(inflateRawSync(raw, { maxOutputLength: Math.min(Math.max(entry.size, 1), bufferConstants.MAX_LENGTH) }));
      } catch (err) {
        throw new ModelLoadError('ERR_MODEL_LOAD', `${this.path}: "${entry.name}" does not inflate to its declared ${entry.size} bytes ` +
          `(${(err as Error).message}); the file is damaged, download it again`, { cause: err });
      }
      if (bytes.length !== entry.size) throw this.bad(`"${entry.name}" inflates to ${bytes.length} bytes, not ${entry.size}`);
      this.inflated = { name: entry.name, bytes };
    }
    return this.inflated.bytes.slice(offset, offset + length);
  }

  /** Where a STORED entry's bytes start in the archive file; undefined for a compressed entry. */
  async storedDataOffset(entry: ZipEntry): Promise<number | undefined> {
    return entry.method === 0 ? this.dataStart(entry) : undefined;
  }

  // The local header's extra field may differ from the central one (torch pads it to
  // align data to 64 bytes), so the data offset comes from the local header itself.
  private async dataStart(entry: ZipEntry): Promise<number> {
    const known = this.dataStarts.get(entry.name);
    if (known !== undefined) return known;
    const h = await readExactly(this.fh, entry.localHeaderOffset, 30, this.path);
    const v = new DataView(h.buffer);
    if (v.getUint32(0, true) !== SIG_LOCAL) throw this.bad(`no local header for "${entry.name}"`);
    const start = entry.localHeaderOffset + 30 + v.getUint16(26, true) + v.getUint16(28, true);
    this.dataStarts.set(entry.name, start);
    return start;
  }

  private bad(why: string): ModelLoadError {
    return new ModelLoadError('ERR_MODEL_LOAD', `${this.path}: ${why}`);
  }
}

async function readCentralDirectory(fh: FileHandle, path: string): Promise<Map<string, ZipEntry>> {
  const bad = (why: string) => new ModelLoadError('ERR_MODEL_LOAD', `${path} is not a readable zip archive: ${why}`);
  const size = (await fh.stat()).size;
  // The end-of-central-directory record is in the last 22 + 65535 (comment) bytes.
  const tailLen = Math.min(size, 22 + 65535 + 20);
  const tail = await readExactly(fh, size - tailLen, tailLen, path);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === SIG_EOCD) { eocd = i; break; }
  }
  if (eocd < 0) throw bad('no end-of-central-directory record');
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    // Zip64: a locator sits right before the classic record and points at the zip64 record.
    if (eocd < 20 || tv.getUint32(eocd - 20, true) !== SIG_EOCD64_LOCATOR) throw bad('zip64 sizes without a zip64 locator');
    const at = Number(tv.getBigUint64(eocd - 20 + 8, true));
    // Checked here because FileHandle.read silently reads from the start of the file
    // when given a position past Number.MAX_SAFE_INTEGER.
    if (at + 56 > size) throw bad('the zip64 end-of-central-directory record lies past the end of the file');
    const rec = await readExactly(fh, at, 56, path);
    const rv = new DataView(rec.buffer);
    if (rv.getUint32(0, true) !== SIG_EOCD64) throw bad('bad zip64 end-of-central-directory record');
    count = Number(rv.getBigUint64(32, true));
    cdSize = Number(rv.getBigUint64(40, true));
    cdOffset = Number(rv.getBigUint64(48, true));
  }
  if (cdOffset + cdSize > size) throw bad('the central directory lies past the end of the file (truncated download?)');
  const cd = await readExactly(fh, cdOffset, cdSize, path);
  const v = new DataView(cd.buffer);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || v.getUint32(p, true) !== SIG_CENTRAL) throw bad(`central directory entry ${i} is malformed`);
    const method = v.getUint16(p + 10, true);
    let compressedSize = v.getUint32(p + 20, true);
    let uncompressed = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let localHeaderOffset = v.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cdSize) throw bad(`central directory entry ${i} overruns the directory`);
    const name = Buffer.from(cd.buffer, p + 46, nameLen).toString('utf8');
    // Zip64 extended information (tag 1) holds, in this order, only the fields whose
    // 32-bit slots are 0xffffffff.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const tag = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (tag === 1) {
        let q = e + 4;
        const next = (): number => {
          if (q + 8 > e + 4 + len || q + 8 > extraEnd) throw bad(`the zip64 field of "${name}" is too short for the sizes it must hold`);
          const x = Number(v.getBigUint64(q, true));
          q += 8;
          return x;
        };
        if (uncompressed === U32_MAX) uncompressed = next();
        if (compressedSize === U32_MAX) compressedSize = next();
        if (localHeaderOffset === U32_MAX) localHeaderOffset = next();
      }
      e += 4 + len;
    }
    if (localHeaderOffset + compressedSize > size) throw bad(`"${name}" lies past the end of the file (truncated download?)`);
    // Otherwise a read inside the declared size would return the bytes of the entries after it.
    if (method === 0 && compressedSize !== uncompressed) throw bad(`"${name}" is stored uncompressed but declares ${uncompressed} bytes in ${compressedSize}`);
    entries.set(name, { name, method, compressedSize, size: uncompressed, localHeaderOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}
