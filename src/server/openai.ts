/**
 * @internal
 * OpenAI's chat completions wire format, in one place: the request body checked and turned
 * into what a session takes, the answer and its stream chunks, and errors in OpenAI's shape
 * with the HTTP status each of our error codes gets.
 */
import { randomBytes } from 'node:crypto';
import { MinigptError } from '../errors.js';
import type { FinishReason, StreamOptions } from '../session.js';

/** An error answered over HTTP: status, OpenAI's `type` and `code`, the parameter at fault. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = status === 401 ? 'authentication_error' : status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Status for each of our error codes a request can cause; anything else is a 500. */
const STATUS_OF_CODE: Partial<Record<string, number>> = {
  ERR_INVALID_ARGUMENT: 400,
  ERR_IMAGE_DECODE: 400,
  ERR_IMAGE_PREPROCESS: 400,
  ERR_NO_PROJECTOR: 400,
  ERR_CONTEXT_OVERFLOW: 400,
  ERR_TEMPLATE: 400,
  ERR_ABORTED: 499,
  ERR_DISPOSED: 503,
};

/** Any error as an HttpError: ours by their code, unknown ones as a 500 that hides the details. */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof MinigptError) {
    const status = STATUS_OF_CODE[err.code] ?? 500;
    const code = err.code === 'ERR_CONTEXT_OVERFLOW' ? 'context_length_exceeded' : err.code.toLowerCase();
    return new HttpError(status, err.message, undefined, code);
  }
  return new HttpError(500, 'The server failed to answer this request; see its log');
}

/** OpenAI's error body. */
export function errorBody(err: HttpError): { error: { message: string; type: string; param: string | null; code: string | null } } {
  return { error: { message: err.message, type: err.type, param: err.param, code: err.code } };
}

/** One part of a message as the session gets it: text, or an image URL still to be read. */
export type RequestPart = { text: string } | { imageUrl: string; param: string };

export interface ChatRequest {
  messages: Array<{ role: 'system' | 'user' | 'assistant'; parts: RequestPart[] }>;
  stream: boolean;
  includeUsage: boolean;
  /** What the session's stream takes (no signal yet). */
  sampling: Omit<StreamOptions, 'signal'>;
  /** The `model` the client named, echoed back. */
  model: string | undefined;
}

const bad = (message: string, param: string | null, code: string | null = 'invalid_value') => new HttpError(400, message, 'invalid_request_error', code, param);

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function optionalNumber(body: Record<string, unknown>, key: string, min: number, max: number, integer = false): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw bad(`'${key}' must be ${integer ? 'an integer' : 'a number'}, not ${typeName(v)}${typeof v === 'number' ? ` ${v}` : ''}`, key, 'invalid_type');
  }
  if (v < min || v > max) throw bad(`'${key}' must be between ${min} and ${max}; got ${v}`, key);
  return v;
}

function textOf(value: unknown, param: string): string {
  if (typeof value !== 'string') throw bad(`${param} must be a string, not ${typeName(value)}`, param, 'invalid_type');
  return value;
}

function partsOf(content: unknown, role: string, param: string): RequestPart[] {
  if (typeof content === 'string') return [{ text: content }];
  if (content === null || content === undefined) {
    if (role === 'assistant') return [{ text: '' }];
    throw bad(`${param} is missing; a ${role} message needs content`, param);
  }
  if (!Array.isArray(content)) throw bad(`${param} must be a string or an array of content parts, not ${typeName(content)}`, param, 'invalid_type');
  return content.map((part, j): RequestPart => {
    const at = `${param}[${j}]`;
    if (typeof part !== 'object' || part === null) throw bad(`${at} must be an object with a 'type'`, at, 'invalid_type');
    const p = part as Record<string, unknown>;
    if (p.type === 'text') return { text: textOf(p.text, `${at}.text`) };
    if (p.type === 'image_url') {
      if (role !== 'user') throw bad(`${at}: only user messages may hold images`, at);
      const image = p.image_url;
      const url = typeof image === 'string' ? image : typeof image === 'object' && image !== null ? (image as Record<string, unknown>).url : undefined;
      return { imageUrl: textOf(url, `${at}.image_url.url`), param: `${at}.image_url.url` };
    }
    throw bad(`${at} has type ${JSON.stringify(p.type)}; this server takes 'text' and 'image_url' parts`, `${at}.type`);
  });
}

const ROLES: Record<string, 'system' | 'user' | 'assistant'> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

/** Checks a parsed JSON body; unknown fields are ignored, as OpenAI does. */
export function parseChatRequest(body: unknown): ChatRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad(`The request body must be a JSON object, not ${typeName(body)}`, null, 'invalid_type');
  const b = body as Record<string, unknown>;
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw bad("'messages' must be a non-empty array", 'messages', b.messages === undefined ? 'missing_required_parameter' : 'invalid_type');
  const messages = b.messages.map((m: unknown, i: number) => {
    const param = `messages[${i}]`;
    if (typeof m !== 'object' || m === null) throw bad(`${param} must be an object with 'role' and 'content'`, param, 'invalid_type');
    const msg = m as Record<string, unknown>;
    const role = typeof msg.role === 'string' ? ROLES[msg.role] : undefined;
    if (!role) {
      const tools = msg.role === 'tool' || msg.role === 'function';
      throw bad(`${param}.role is ${JSON.stringify(msg.role)}; ${tools ? 'tools are not supported by this server' : "use 'system', 'developer', 'user' or 'assistant'"}`, `${param}.role`);
    }
    if (msg.tool_calls !== undefined && msg.tool_calls !== null) throw bad(`${param} has tool_calls; tools are not supported by this server`, `${param}.tool_calls`);
    return { role, parts: partsOf(msg.content, role, `${param}.content`) };
  });
  if (messages[messages.length - 1]!.role !== 'user') throw bad('The last message must be the user\'s: the answer follows it', `messages[${messages.length - 1}].role`);
  const n = optionalNumber(b, 'n', 1, 128, true);
  if (n !== undefined && n !== 1) throw bad(`'n' is ${n}; this server gives one choice per request (n = 1). Send ${n} requests instead`, 'n', 'unsupported_value');
  for (const key of ['tools', 'functions', 'response_format', 'logit_bias'] as const) {
    const v = b[key];
    if (v === undefined || v === null) continue;
    if (key === 'response_format' && typeof v === 'object' && (v as Record<string, unknown>).type === 'text') continue;
    if ((key === 'tools' || key === 'functions') && Array.isArray(v) && v.length === 0) continue;
    throw bad(`'${key}' is not supported by this server; leave it out`, key, 'unsupported_parameter');
  }
  if (b.logprobs === true) throw bad("'logprobs' is not supported by this server; leave it out", 'logprobs', 'unsupported_parameter');
  const maxTokens = optionalNumber(b, 'max_completion_tokens', 1, 1_000_000, true) ?? optionalNumber(b, 'max_tokens', 1, 1_000_000, true);
  const stopValue = b.stop;
  let stop: string[] | undefined;
  if (typeof stopValue === 'string') stop = [stopValue];
  else if (Array.isArray(stopValue)) {
    if (stopValue.length > 16 || !stopValue.every((s) => typeof s === 'string')) throw bad("'stop' must be a string or an array of at most 16 strings", 'stop', 'invalid_type');
    stop = stopValue as string[];
  } else if (stopValue !== undefined && stopValue !== null) throw bad("'stop' must be a string or an array of strings", 'stop', 'invalid_type');
  stop = stop?.filter((s) => s.length > 0);
  const stream = b.stream === true;
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== 'boolean') throw bad("'stream' must be true or false", 'stream', 'invalid_type');
  const streamOptions = b.stream_options as Record<string, unknown> | undefined | null;
  const sampling: ChatRequest['sampling'] = {
    maxTokens,
    temperature: optionalNumber(b, 'temperature', 0, 2),
    topP: optionalNumber(b, 'top_p', 0, 1),
    seed: optionalNumber(b, 'seed', -(2 ** 53), 2 ** 53, true),
    frequencyPenalty: optionalNumber(b, 'frequency_penalty', -2, 2),
    presencePenalty: optionalNumber(b, 'presence_penalty', -2, 2),
    stop: stop && stop.length > 0 ? stop : undefined,
  };
  // A seed is any integer for OpenAI; the sampler takes 32 bits.
  if (sampling.seed !== undefined) sampling.seed = ((sampling.seed % 0xffffffff) + 0xffffffff) % 0xffffffff;
  return {
    messages,
    stream,
    includeUsage: stream && typeof streamOptions === 'object' && streamOptions !== null && streamOptions.include_usage === true,
    sampling,
    model: typeof b.model === 'string' ? b.model : undefined,
  };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usageOf(stats: { promptTokens: number; reusedTokens: number; generatedTokens: number }): Usage {
  return {
    prompt_tokens: stats.promptTokens,
    completion_tokens: stats.generatedTokens,
    total_tokens: stats.promptTokens + stats.generatedTokens,
    prompt_tokens_details: { cached_tokens: stats.reusedTokens },
  };
}

/** OpenAI's finish reasons: a full context, like the token limit, is 'length'. */
export function openaiFinishReason(reason: FinishReason): 'stop' | 'length' {
  return reason === 'length' || reason === 'context' ? 'length' : 'stop';
}

/** The fields every answer and chunk of one request share. */
export class Completion {
  readonly id = `chatcmpl-${randomBytes(12).toString('hex')}`;
  readonly created = Math.floor(Date.now() / 1000);
  constructor(readonly model: string) {}

  answer(text: string, finish: 'stop' | 'length', usage: Usage) {
    return {
      id: this.id,
      object: 'chat.completion' as const,
      created: this.created,
      model: this.model,
      choices: [{ index: 0, message: { role: 'assistant' as const, content: text, refusal: null }, logprobs: null, finish_reason: finish }],
      usage,
    };
  }

  chunk(delta: { role?: 'assistant'; content?: string }, finish: 'stop' | 'length' | null = null) {
    return {
      id: this.id,
      object: 'chat.completion.chunk' as const,
      created: this.created,
      model: this.model,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    };
  }

  usageChunk(usage: Usage) {
    return { id: this.id, object: 'chat.completion.chunk' as const, created: this.created, model: this.model, choices: [], usage };
  }
}
