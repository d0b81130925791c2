/**
 * @internal
 * The rules for `data:` image URLs: the media type checked, base64 (standard, URL-safe,
 * percent-escaped or with whitespace) or percent-encoded bytes decoded, the size limit applied.
 * One implementation, used on the JS thread for small bodies and on the body thread for large
 * ones (body-decode.ts), so both give the same bytes and the same messages.
 */
import { InvalidArgumentError } from '../errors.js';

/** The start of a URL for messages: a data URL can be megabytes. */
export function shortenUrl(url: string): string {
  const head = url.slice(0, 40);
  return url.length > head.length ? `${head}...` : head;
}

const mib = (n: number) => `${(n / (1024 * 1024)).toFixed(1)} MiB`;

/**
 * The bytes of a `data:` URL (the caller has checked that it starts with `data:`).
 * @throws InvalidArgumentError for a malformed URL, bad base64 or escapes, no data, or more
 *   than `maxBytes` decoded bytes.
 */
export function readDataUrl(url: string, maxBytes: number): Buffer {
  const comma = url.indexOf(',');
  if (comma < 0) throw new InvalidArgumentError(`Malformed data URL (${shortenUrl(url)}): no comma before the data; expected data:<media type>;base64,<data>`);
  const meta = url.slice(5, comma).split(';').map((s) => s.trim());
  const base64 = meta.length > 1 && meta[meta.length - 1].toLowerCase() === 'base64';
  const mediaType = meta[0];
  if (mediaType !== '' && !/^[\w.+-]+\/[\w.+-]+$/.test(mediaType)) {
    throw new InvalidArgumentError(`Malformed data URL: "${mediaType.slice(0, 40)}" is not a media type; expected data:image/png;base64,<data>`);
  }
  const bytes = base64 ? decodeBase64(url, comma + 1, maxBytes) : percentDecode(url, comma + 1, maxBytes);
  if (bytes.length === 0) throw new InvalidArgumentError('The data URL holds no image data; put the base64 image after the comma (data:image/png;base64,<data>)');
  return bytes;
}

function tooBig(size: number, maxBytes: number): InvalidArgumentError {
  return new InvalidArgumentError(`The image in the data URL is ${mib(size)}, over this server's limit of ${mib(maxBytes)}; send a smaller image`);
}

function decodeBase64(url: string, start: number, maxBytes: number): Buffer {
  let text = url.slice(start);
  // Percent-escaped base64 (%2B, %2F, %3D) is still base64 to a browser; whitespace is skipped.
  if (text.includes('%')) text = percentDecode(url, start, Infinity).toString('latin1');
  if (/[\t\n\f\r ]/.test(text)) text = text.replace(/[\t\n\f\r ]+/g, '');
  const bad = /[^A-Za-z0-9+/\-_=]/.exec(text);
  const padAt = text.indexOf('=');
  const badPad = padAt >= 0 && (padAt < text.length - 2 || !/^={1,2}$/.test(text.slice(padAt)) || text.length % 4 !== 0);
  if (bad || badPad || text.length % 4 === 1) {
    const why = bad ? `the character ${JSON.stringify(bad[0])} at data position ${bad.index} is not base64` : 'its length or "=" padding is wrong';
    throw new InvalidArgumentError(`Malformed base64 in the data URL: ${why}; send the image as standard base64 (data:image/png;base64,<data>)`);
  }
  const unpadded = padAt >= 0 ? padAt : text.length;
  const size = Math.floor((unpadded * 3) / 4);
  if (size > maxBytes) throw tooBig(size, maxBytes);
  return Buffer.from(text, 'base64'); // node's decoder reads the URL-safe alphabet too
}

const hex = (c: number) => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1);

// Byte-wise: %FF is the byte 0xff, not a UTF-8 sequence (decodeURIComponent would throw on it).
function percentDecode(url: string, start: number, maxBytes: number): Buffer {
  const raw = Buffer.from(url.slice(start), 'utf8');
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    let b = raw[i];
    if (b === 37) {
      const hi = hex(raw[i + 1] ?? 0);
      const lo = hex(raw[i + 2] ?? 0);
      if (hi < 0 || lo < 0) {
        throw new InvalidArgumentError(`Malformed data URL: "%" at data position ${i} does not start a %XX escape; write "%" as %25, or send the image as base64 (data:image/png;base64,<data>)`);
      }
      b = hi * 16 + lo;
      i += 2;
    }
    out[n++] = b;
  }
  if (n > maxBytes) throw tooBig(n, maxBytes);
  return out.subarray(0, n);
}
