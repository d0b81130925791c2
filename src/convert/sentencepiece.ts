/**
 * @internal
 * Reads the vocabulary of a SentencePiece `tokenizer.model` (a protobuf `ModelProto`)
 * without the sentencepiece library: field 1 holds the pieces, each with its text (1),
 * score (2, float) and type (3, enum; NORMAL when absent). Everything else in the model
 * (trainer and normalizer specs) is skipped: llama.cpp's SPM tokenizer needs only these.
 */
import { ModelLoadError } from '../errors.js';

/** sentencepiece_model.proto `SentencePiece.Type`. */
export const enum PieceType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** One vocabulary entry, in id order. */
export interface Piece {
  piece: string;
  score: number;
  type: PieceType;
}

class Reader {
  pos: number;
  constructor(readonly bytes: Uint8Array, start: number, readonly end: number, readonly file: string) {
    this.pos = start;
  }

  fail(why: string): never {
    throw new ModelLoadError('ERR_MODEL_LOAD', `${this.file} is not a SentencePiece model: ${why} at byte ${this.pos}`);
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.bytes[this.pos++];
      // Numbers past 2^53 only appear in fields we skip; their value does not matter.
      result += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) return result;
    }
    return this.fail('varint longer than 10 bytes');
  }

  skip(wire: number): void {
    switch (wire) {
      case 0: this.varint(); return;
      case 1: this.advance(8); return;
      case 2: this.advance(this.varint()); return;
      case 5: this.advance(4); return;
      default: this.fail(`unsupported wire type ${wire}`);
    }
  }

  advance(n: number): void {
    if (n > this.end - this.pos) this.fail('field runs past its end');
    this.pos += n;
  }
}

/** Parse the pieces of a `tokenizer.model`. `file` names it in errors. */
export function parseSentencePiece(bytes: Uint8Array, file: string): Piece[] {
  const r = new Reader(bytes, 0, bytes.length, file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const pieces: Piece[] = [];
  while (r.pos < r.end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field !== 1) {
      r.skip(wire);
      continue;
    }
    if (wire !== 2) r.fail('piece is not a message');
    const len = r.varint();
    const end = r.pos + len;
    if (end > r.end) r.fail('piece runs past the end of the file');
    const p = new Reader(bytes, r.pos, end, file);
    let piece: string | undefined;
    let score = 0;
    let type = PieceType.NORMAL;
    while (p.pos < p.end) {
      const t = p.varint();
      const f = Math.floor(t / 8);
      const w = t & 7;
      if (f === 1 && w === 2) {
        const n = p.varint();
        const at = p.pos;
        p.advance(n);
        try {
          piece = decoder.decode(bytes.subarray(at, at + n));
        } catch {
          p.fail(`piece ${pieces.length} is not valid UTF-8`);
        }
      } else if (f === 2 && w === 5) {
        const at = p.pos;
        p.advance(4);
        score = view.getFloat32(at, true);
      } else if (f === 3 && w === 0) {
        type = p.varint() as PieceType;
        if (type < PieceType.NORMAL || type > PieceType.BYTE) p.fail(`piece ${pieces.length} has unknown type ${type}`);
      } else {
        p.skip(w);
      }
    }
    if (piece === undefined) r.fail(`piece ${pieces.length} has no text`);
    pieces.push({ piece: piece as string, score, type });
    r.pos = end;
  }
  if (pieces.length === 0) throw new ModelLoadError('ERR_MODEL_LOAD', `${file} is not a SentencePiece model: it holds no pieces`);
  return pieces;
}
