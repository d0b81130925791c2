/**
 * @internal
 * The small HTTP pieces the routes share: reading a JSON body under a size limit, answering
 * JSON and errors, and checking the API key in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorBody, HttpError } from './openai.js';

/** Reads the body as JSON; 413 past `maxBytes` (by Content-Length up front, or as it arrives), 400 for bad JSON. */
export function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<unknown> {
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
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > maxBytes) {
        failed = true;
        chunks.length = 0;
        reject(tooBig());
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', (err) => {
      if (!failed) reject(err);
      failed = true;
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        reject(new HttpError(400, `The request body is not valid JSON: ${(err as Error).message}`, 'invalid_request_error', 'invalid_json'));
      }
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
