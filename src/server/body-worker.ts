/**
 * @internal
 * The thread of body-parser.ts: turns request bodies into checked chat requests with their data
 * URLs decoded, and hands the image bytes back by transfer.
 */
import { parentPort } from 'node:worker_threads';
import { decodeChatBody } from './body-decode.js';
import type { BodyReplyMessage, BodyRequestMessage } from './body-parser.js';
import { HttpError } from './openai.js';

/** `bytes` alone in an ArrayBuffer of its own, so that transferring it moves nothing else. */
function owned(bytes: Buffer): Uint8Array<ArrayBuffer> {
  const buffer = bytes.buffer;
  if (buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === buffer.byteLength) return new Uint8Array(buffer);
  const copy = new Uint8Array(new ArrayBuffer(bytes.byteLength));
  copy.set(bytes);
  return copy;
}

parentPort!.on('message', ({ id, segments, maxImageBytes }: BodyRequestMessage) => {
  let reply: BodyReplyMessage;
  const transfer: ArrayBuffer[] = [];
  try {
    const bytes = segments.length === 1 ? segments[0]! : Buffer.concat(segments);
    const { request, images } = decodeChatBody(bytes, maxImageBytes);
    const entries: Array<[string, { bytes: Uint8Array; hash: string } | { error: string }]> = [];
    for (const [key, image] of images) {
      if ('error' in image) entries.push([key, image]);
      else {
        const bytes = owned(image.bytes);
        transfer.push(bytes.buffer);
        entries.push([key, { bytes, hash: image.hash }]);
      }
    }
    reply = { id, request, images: entries };
  } catch (err) {
    if (err instanceof HttpError) {
      reply = { id, httpError: { status: err.status, message: err.message, type: err.type, code: err.code, param: err.param, headers: err.headers } };
    } else {
      reply = { id, failure: (err as Error)?.message ?? String(err) };
    }
  }
  parentPort!.postMessage(reply, transfer);
});
