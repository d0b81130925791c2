/**
 * @internal
 * Stop strings over a stream of pieces: text that might begin a stop string is held back
 * until it is known not to, and nothing from the stop string on is ever released.
 */
export interface Piece {
  /** The text this piece adds to the answer (whole UTF-8 characters). */
  text: string;
  /** The id of the token that produced it: always a token the model generated. */
  token: number;
}

export class StopDetector {
  #stops: string[];
  #held: Piece[] = [];
  stopped = false;

  constructor(stops: string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** Pieces safe to release after `piece` arrived. Sets `stopped` when a stop string appeared. */
  push(piece: Piece): Piece[] {
    if (this.stopped) return [];
    if (this.#stops.length === 0) return [piece];
    this.#held.push(piece);
    const text = this.#held.map((p) => p.text).join('');
    let cut = -1;
    for (const stop of this.#stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      return this.#release(cut, true);
    }
    // Longest suffix of `text` that is a proper prefix of a stop string must stay held.
    let keep = 0;
    for (const stop of this.#stops) {
      for (let n = Math.min(stop.length - 1, text.length); n > keep; n--) {
        if (text.endsWith(stop.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    return this.#release(text.length - keep, false);
  }

  /** Releases everything still held (the stream ended without a stop string). */
  flush(): Piece[] {
    if (this.stopped) return [];
    const out = this.#held;
    this.#held = [];
    return out;
  }

  // Releases whole pieces ending at or before `upTo` characters; with `truncate`, the piece
  // that crosses `upTo` is cut there and everything after is dropped.
  #release(upTo: number, truncate: boolean): Piece[] {
    const out: Piece[] = [];
    let pos = 0;
    let i = 0;
    for (; i < this.#held.length; i++) {
      const p = this.#held[i];
      if (pos + p.text.length <= upTo) {
        out.push(p);
        pos += p.text.length;
        continue;
      }
      if (truncate && upTo > pos) out.push({ text: p.text.slice(0, upTo - pos), token: p.token });
      break;
    }
    this.#held = truncate ? [] : this.#held.slice(i);
    return out;
  }
}
