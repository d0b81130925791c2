/**
 * @internal
 * A chat request from the bytes of its body: UTF-8, JSON, parseChatRequest, and each `data:`
 * image URL replaced by a key to its decoded bytes (or to the reason they do not decode). The
 * same function runs on the JS thread for small bodies and on the body thread for large ones
 * (body-parser.ts), so both answer alike. Decoded images come with their sha256 (embedding-cache's
 * `imageHash`, computed where the bytes are: hashing 20 MB with webcrypto first copies them on
 * the JS thread).
 */
import { createHash, randomUUID } from 'node:crypto';
import { MinigptError } from '../errors.js';
import { readDataUrl } from './body-data-url.js';
import { HttpError, parseChatRequest, type ChatRequest } from './openai.js';

/** A data URL's bytes with their hex sha256, or the message of the InvalidArgumentError it gives. */
export type DecodedImage = { bytes: Buffer; hash: string } | { error: string };

/** A checked request whose data URLs are keys of `images`. */
export interface DecodedRequest {
  request: ChatRequest;
  images: Map<string, DecodedImage>;
}

/**
 * Parses and checks a chat request body and decodes its data URLs.
 * @param bytes The body as received.
 * @param maxImageBytes Largest decoded image; a larger one becomes its error.
 * @throws HttpError 400 `invalid_json` when the body is not JSON (as UTF-8), and the 400s of
 *   parseChatRequest. A data URL that does not decode is not thrown: the request reads it
 *   (and fails) in its turn, after the images before it, as when nothing was decoded ahead.
 */
export function decodeChatBody(bytes: Uint8Array, maxImageBytes: number): DecodedRequest {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new HttpError(400, `The request body is not valid JSON: ${(err as Error).message}`, 'invalid_request_error', 'invalid_json');
  }
  const request = parseChatRequest(body);
  const images = new Map<string, DecodedImage>();
  // Keys no client sends by chance: a URL of its own equal to one would change meaning.
  const prefix = `decoded-image:${randomUUID()}:`;
  for (const message of request.messages) {
    for (const part of message.parts) {
      if (!('imageUrl' in part) || !/^data:/i.test(part.imageUrl)) continue;  // remote URLs are fetched later
      const key = `${prefix}${images.size}`;
      try {
        const bytes = readDataUrl(part.imageUrl, maxImageBytes);
        images.set(key, { bytes, hash: createHash('sha256').update(bytes).digest('hex') });
      } catch (err) {
        if (!(err instanceof MinigptError)) throw err;
        images.set(key, { error: err.message });
      }
      part.imageUrl = key;
    }
  }
  return { request, images };
}
