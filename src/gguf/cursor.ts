import type { FileHandle } from 'node:fs/promises';
import { GgufFormatError } from './format-error.js';

/**
 * Sequential little-endian reader over the head of a file, refilled in chunks, so a
 * header can be parsed without touching the (possibly many-GB) tensor data after it.
 * Every read is checked against both the file end and a byte budget first, so a
 * hostile length can never make us allocate more than the file actually holds.
 * @internal
 */
export class HeaderCursor {
  /** Absolute file offset of the next byte to read. */
  pos = 0;
  private buf: Buffer;
  private bufStart = 0;
  private bufEnd = 0;
  private lastString = { off: 0, len: 0 };

  constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly fileSize: number,
    private readonly byteBudget: number,
    private readonly chunkSize = 1 << 20,
  ) {
    this.buf = Buffer.alloc(0);
  }

  /** Bytes between the cursor and the end of the file. */
  remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Make `n` bytes at the cursor available in the buffer, or throw if the file or budget ends first. */
  async need(n: number, what: string): Promise<void> {
    if (this.pos + n <= this.bufEnd && this.pos + n <= this.byteBudget) return;
    if (this.pos + n > this.fileSize) {
      throw new GgufFormatError(
        'truncated',
        this.path,
        `${this.path}: the file ends inside the GGUF header (while reading ${what} at byte ${this.pos}; ` +
          `the file is ${this.fileSize} bytes). It is truncated or corrupt, often an incomplete download: download it again.`,
      );
    }
    if (this.pos + n > this.byteBudget) {
      throw new GgufFormatError(
        'metadata-too-large',
        this.path,
        `${this.path}: the GGUF header is larger than the ${this.byteBudget}-byte limit (reached while reading ${what}). ` +
          `Either the file is corrupt or it carries unusually large metadata: raise maxMetadataBytes if you trust it.`,
      );
    }
    const want = Math.min(Math.max(n, this.chunkSize), this.fileSize - this.pos);
    if (this.buf.length < want) this.buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(this.buf, got, want - got, this.pos + got);
      if (bytesRead === 0) break; // the file shrank under us
      got += bytesRead;
    }
    this.bufStart = this.pos;
    this.bufEnd = this.pos + got;
    if (got < n) {
      throw new GgufFormatError('truncated', this.path, `${this.path}: the file ended early while reading ${what}; was it being written or modified?`);
    }
  }

  private at(size: number): number {
    const off = this.pos - this.bufStart;
    this.pos += size;
    return off;
  }

  // The synchronous readers below assume a prior need() covering them.
  u8(): number { return this.buf.readUInt8(this.at(1)); }
  i8(): number { return this.buf.readInt8(this.at(1)); }
  u16(): number { return this.buf.readUInt16LE(this.at(2)); }
  i16(): number { return this.buf.readInt16LE(this.at(2)); }
  u32(): number { return this.buf.readUInt32LE(this.at(4)); }
  i32(): number { return this.buf.readInt32LE(this.at(4)); }
  f32(): number { return this.buf.readFloatLE(this.at(4)); }
  f64(): number { return this.buf.readDoubleLE(this.at(8)); }
  u64(): bigint { return this.buf.readBigUInt64LE(this.at(8)); }
  i64(): bigint { return this.buf.readBigInt64LE(this.at(8)); }

  /** `n` bytes decoded as UTF-8 (invalid sequences become U+FFFD, as they only matter for display). */
  utf8(n: number): string {
    const off = this.at(n);
    this.lastString = { off, len: n };
    return this.buf.toString('utf8', off, off + n);
  }

  /** A copy of the bytes of the string read last (by utf8() or bufferedString()). */
  lastStringBytes(): Buffer {
    return Buffer.from(this.buf.subarray(this.lastString.off, this.lastString.off + this.lastString.len));
  }

  /**
   * A length-prefixed string when it lies entirely in the buffer and budget, else
   * undefined without moving the cursor (the caller then takes the checked slow path).
   * Saves one await per string, which dominates reading 100k-token vocabularies.
   */
  bufferedString(): string | undefined {
    const off = this.pos - this.bufStart;
    if (this.pos + 8 > this.bufEnd) return undefined;
    const len = this.buf.readBigUInt64LE(off);
    const end = this.pos + 8 + Number(len);
    if (len > BigInt(this.bufEnd) || end > this.bufEnd || end > this.byteBudget) return undefined;
    this.pos = end;
    this.lastString = { off: off + 8, len: Number(len) };
    return this.buf.toString('utf8', off + 8, off + 8 + Number(len));
  }

  /** A copy of the next `n` buffered bytes, without moving the cursor. */
  peek(n: number): Buffer {
    const off = this.pos - this.bufStart;
    return Buffer.from(this.buf.subarray(off, off + n));
  }
}
