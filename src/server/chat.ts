/**
 * @internal
 * POST /v1/chat/completions: the request read and checked, its images read, a slot taken, the
 * images encoded (once per distinct image), the answer streamed as SSE or sent whole. A client that
 * goes away stops its generation within a token and frees its slot.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ImageEmbedding } from '../embedding.js';
import type { ChatMessage, FinishReason } from '../session.js';
import type { BodyParser, ParsedChatBody } from './body-parser.js';
import { readBody, sendJson } from './http-io.js';
import type { EmbeddingCache, EmbeddingLease, HashedImage, RemoteImagePolicy } from './images.js';
import type { ServerMetrics } from './metrics.js';
import { Completion, HttpError, openaiFinishReason, toHttpError, usageOf } from './openai.js';
import type { SlotPool } from './slots.js';

export interface ChatContext {
  slots: SlotPool;
  images: EmbeddingCache | undefined;
  imagePolicy: RemoteImagePolicy;
  metrics: ServerMetrics;
  maxBody: number;
  /** Turns bodies into requests, large ones off the JS thread. */
  bodies: BodyParser;
  modelName: string;
}

/** A message's identity for prefix matching: its role, text and images (by content hash). */
function fingerprint(role: string, parts: Array<{ text: string } | { hash: string }>): string {
  const h = createHash('sha256').update(role);
  for (const p of parts) h.update('text' in p ? `\0t${p.text}` : `\0i${p.hash}`);
  return h.digest('base64url');
}

/** A request's conversation with its images read and identified, not yet encoded. */
interface PreparedConversation {
  messages: Array<{ role: ChatMessage['role']; content: Array<string | HashedImage> }>;
  fingerprints: string[];
}

async function prepare(body: ParsedChatBody, ctx: ChatContext, signal: AbortSignal): Promise<PreparedConversation> {
  const messages: PreparedConversation['messages'] = [];
  const fingerprints: string[] = [];
  for (const m of body.request.messages) {
    const content: Array<string | HashedImage> = [];
    const identity: Array<{ text: string } | { hash: string }> = [];
    for (const part of m.parts) {
      if ('text' in part) {
        content.push(part.text);
        identity.push({ text: part.text });
        continue;
      }
      if (!ctx.images) throw new HttpError(400, 'This model was loaded without a projector, so it takes no images; send text only', 'invalid_request_error', 'images_not_supported', part.param);
      let image: HashedImage;
      try {
        image = await body.readImage(part.imageUrl, ctx.imagePolicy, signal);
      } catch (err) {
        const http = toHttpError(err);
        throw new HttpError(http.status, `${part.param}: ${http.message}`, http.type, http.code, part.param);
      }
      content.push(image);
      identity.push({ hash: image.hash });
    }
    messages.push({ role: m.role, content });
    fingerprints.push(fingerprint(m.role, identity));
  }
  return { messages, fingerprints };
}

/**
 * The conversation's images encoded (or taken from the cache). Done once the request has its
 * slot, not on arrival: an encode is a computation on the model's threads, and made while other
 * slots generate it would pause their answers (requests that got their slots together encode,
 * evaluate and then generate together).
 */
async function encodeImages(prepared: PreparedConversation, images: EmbeddingCache | undefined, leases: EmbeddingLease[], signal: AbortSignal): Promise<ChatMessage[]> {
  const messages: ChatMessage[] = [];
  for (const m of prepared.messages) {
    const content: Array<string | ImageEmbedding> = [];
    for (const part of m.content) {
      if (typeof part === 'string') content.push(part);
      else {
        const lease = await images!.acquire(part, signal);  // prepare() refused images without a cache
        leases.push(lease);
        content.push(lease.embedding);
      }
    }
    messages.push({ role: m.role, content });
  }
  return messages;
}

/** Writes one SSE event; false when the client is gone. */
function sse(res: ServerResponse, data: unknown): boolean {
  if (res.destroyed || res.writableEnded) return false;
  res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  return true;
}

export async function handleChat(req: IncomingMessage, res: ServerResponse, ctx: ChatContext): Promise<void> {
  const body = await ctx.bodies.parse(await readBody(req, ctx.maxBody), ctx.imagePolicy.maxBytes);
  const request = body.request;
  // The client going away (or the server closing) cancels everything from here on.
  const cancel = new AbortController();
  const onGone = () => {
    if (!res.writableFinished) cancel.abort();
  };
  res.on('close', onGone);
  const started = performance.now();
  const leases: EmbeddingLease[] = [];
  try {
    const prepared = await prepare(body, ctx, cancel.signal);
    const slot = await ctx.slots.acquire(prepared.fingerprints, cancel.signal);
    let messages: ChatMessage[];
    try {
      messages = await encodeImages(prepared, ctx.images, leases, cancel.signal);
    } catch (err) {
      ctx.slots.release(slot, slot.conversation);  // nothing ran: the context holds what it held
      throw err;
    }
    const completion = new Completion(request.model ?? ctx.modelName);
    let answer = '';
    let finish: FinishReason = 'error';
    let firstAt: number | undefined;
    let lastAt = 0;
    try {
      const stream = slot.session.chat(messages, { ...request.sampling, signal: cancel.signal });
      if (request.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
        sse(res, completion.chunk({ role: 'assistant', content: '' }));
      }
      for (;;) {
        const next = await stream.next();
        if (next.done) {
          finish = next.value.finishReason;
          break;
        }
        const now = performance.now();
        if (firstAt === undefined) {
          firstAt = now;
          ctx.metrics.firstToken((now - started) / 1000);
        } else ctx.metrics.tokenGap((now - lastAt) / 1000);
        lastAt = now;
        answer += next.value.text;
        if (request.stream && next.value.text.length > 0) sse(res, completion.chunk({ content: next.value.text }));
      }
    } catch (err) {
      if (cancel.signal.aborted) return;  // the client is gone: nothing to answer
      if (!request.stream || !res.headersSent) throw err;
      // Headers are out: the error goes in the stream, in OpenAI's shape.
      const http = toHttpError(err);
      sse(res, { error: { message: http.message, type: http.type, param: http.param, code: http.code } });
      res.end();
      return;
    } finally {
      const stats = slot.session.stats;
      ctx.metrics.tokens({ prompt: stats.promptTokens, reused: stats.reusedTokens, completion: stats.generatedTokens });
      // What the context holds now: the conversation and, when the answer finished, the answer.
      const held = finish === 'error' || finish === 'aborted' ? prepared.fingerprints.slice(0, -1) : [...prepared.fingerprints, fingerprint('assistant', [{ text: answer }])];
      ctx.slots.release(slot, held);
    }
    const usage = usageOf(slot.session.stats);
    const reason = openaiFinishReason(finish);
    if (request.stream) {
      sse(res, completion.chunk({}, reason));
      if (request.includeUsage) sse(res, completion.usageChunk(usage));
      sse(res, '[DONE]');
      res.end();
    } else {
      sendJson(res, 200, completion.answer(answer, reason, usage));
    }
  } finally {
    res.off('close', onGone);
    for (const lease of leases) lease.release();
  }
}
