/**
 * @internal
 * The small HTTP pieces the routes share: reading a body under a size limit, answering
 * JSON and errors, and checking the API key in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorBody, HttpError } from './openai.js';

/**
 * A request body as received: its bytes in segments, each at the start of an ArrayBuffer of its
 * own, so that they can be handed to another thread without a copy (a transfer detaches them).
 */
export interface BodyBytes {
  segments: Uint8Array<ArrayBuffer>[];
  size: number;
}

// Bytes are copied into segments as they arrive, so no single copy of the whole body ever
// blocks the JS thread (a 20 MB Buffer.concat takes 5 to 15 ms), and memory is taken as bytes
// come, not as Content-Length promises.
const FIRST_SEGMENT_BYTES = 64 << 10;
const SEGMENT_BYTES = 1 << 20;

/** Reads the body; 413 past `maxBytes` (by Content-Length up front, or as it arrives). */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<BodyBytes> {
  const tooBig = () =>
    new HttpError(413, `The request body is larger than ${maxBytes} bytes; send smaller images or start the server with a larger --max-body`, 'invalid_request_error', 'request_too_large', null, {
      connection: 'close',
    });
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    // Unread, so the connection cannot be kept: it closes once the answer is sent.
    req.resume();
    return Promise.reject(tooBig());
  }
  return new Promise((resolve, reject) => {
    const segments: Uint8Array<ArrayBuffer>[] = [];
    let segment: Uint8Array<ArrayBuffer> | undefined;
    let used = 0;
    let size = 0;
    let failed = false;
    const nextSegment = () => {
      const promised = Number.isFinite(declared) && declared > size ? declared - size : 0;
      const bytes = Math.min(SEGMENT_BYTES, promised || (segments.length === 0 ? FIRST_SEGMENT_BYTES : SEGMENT_BYTES));
      segment = new Uint8Array(new ArrayBuffer(bytes));
      used = 0;
    };
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > maxBytes) {
        failed = true;
        segments.length = 0;
        segment = undefined;
        reject(tooBig());
        return;
      }
      let at = 0;
      while (at < chunk.length) {
        if (!segment || used === segment.length) {
          if (segment) segments.push(segment);
          nextSegment();
        }
        const n = Math.min(chunk.length - at, segment!.length - used);
        segment!.set(chunk.subarray(at, at + n), used);
        used += n;
        at += n;
      }
    });
    req.on('error', (err) => {
      if (!failed) reject(err);
      failed = true;
    });
    req.on('end', () => {
      if (failed) return;
      if (segment && used > 0) segments.push(segment.subarray(0, used));
      resolve({ segments, size });
    });
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function sendError(res: ServerResponse, err: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, err.status, errorBody(err), err.headers);
}

/** Compares the request's bearer token with the key without a timing leak (equal-length digests). */
export function checkApiKey(req: IncomingMessage, key: string | undefined): void {
  if (!key) return;
  const header = req.headers.authorization ?? '';
  const match = /^Bearer\s+(.+)$/i.exec(header);
  const digest = (s: string) => createHash('sha256').update(s).digest();
  if (!match || !timingSafeEqual(digest(match[1]!.trim()), digest(key))) {
    throw new HttpError(401, match ? 'Incorrect API key provided' : 'Missing API key: send it as "Authorization: Bearer <key>"', 'authentication_error', 'invalid_api_key', null, {
      'www-authenticate': 'Bearer',
    });
  }
}
