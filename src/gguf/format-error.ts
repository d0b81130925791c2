/** Why a file was refused; stable strings meant for programs (tests, error mapping). */
export type GgufFormatErrorReason =
  | 'not-a-file'
  | 'empty'
  | 'bad-magic'
  | 'unsupported-version'
  | 'truncated'
  | 'bad-count'
  | 'bad-string'
  | 'bad-key'
  | 'bad-type'
  | 'bad-tensor'
  | 'bad-alignment'
  | 'bad-offset'
  | 'tensor-out-of-bounds'
  | 'metadata-too-large';

/** A file that is not a GGUF this library can use; `message` says what is wrong and what to do. */
export class GgufFormatError extends Error {
  override readonly name = 'GgufFormatError';
  readonly reason: GgufFormatErrorReason;
  /** The file the error is about. */
  readonly path: string;

  constructor(reason: GgufFormatErrorReason, path: string, message: string) {
    super(message);
    this.reason = reason;
    this.path = path;
  }
}
