/**
 * @internal
 * Chat templates: the Jinja template a GGUF carries (`tokenizer.chat_template`), rendered
 * with @huggingface/jinja. Images appear in messages as marker strings that the session
 * splits out again after rendering.
 *
 * A template is code chosen by whoever made the model file (or sent the request), so it is
 * rendered in a worker thread of a child process, under the limits below (template-host.ts
 * says why).
 */
import { AbortedError, MinigptError, throwIfAborted } from './errors.js';
import { TemplateClient } from './template-client.js';
import type { RenderOutcome } from './template-host.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface RenderContext {
  bosText: string | null;
  eosText: string | null;
  /** The tokenizer adds BOS itself, so a BOS the template writes is dropped. */
  addsBos: boolean;
}

/**
 * @internal Limits on one chat template render. A real template renders in well under a
 * millisecond and writes little beyond the messages it is given. Read at each render (the heap
 * limit when the renderer starts), so tests can change them.
 */
export const TEMPLATE_LIMITS = {
  /** Wall time of one render, in milliseconds. */
  timeMs: 2000,
  /** Characters a template may write beyond the total length of the messages' content. */
  outputChars: 4 * 1024 * 1024,
  /** V8 heap of the renderer process, in MiB. */
  heapMb: 256,
};

let host: TemplateClient | null = null;

const fallback = "Pass createSession({ template: 'none' }) to send prompts as written, or a Jinja template string of your own";

/**
 * Renders a conversation with a Jinja chat template, off the JS thread and within
 * {@link TEMPLATE_LIMITS}. Rejects with `ERR_TEMPLATE` when the template fails or breaks a
 * limit, with `AbortedError` when `signal` aborts first.
 */
export async function renderChat(source: string, messages: ChatMessage[], ctx: RenderContext, options: { signal?: AbortSignal } = {}): Promise<string> {
  throwIfAborted(options.signal);
  host ??= new TemplateClient(TEMPLATE_LIMITS);
  let inputChars = 0;
  for (const m of messages) inputChars += m.content.length;
  const outcome = await host.render(
    {
      source,
      messages,
      bosToken: ctx.bosText ?? '',
      eosToken: ctx.eosText ?? '',
      maxChars: TEMPLATE_LIMITS.outputChars + inputChars,
    },
    options.signal,
  );
  if (outcome.kind === 'text') {
    let text = outcome.text;
    if (ctx.addsBos && ctx.bosText && text.startsWith(ctx.bosText)) text = text.slice(ctx.bosText.length);
    return text;
  }
  throw failure(outcome, inputChars, options.signal);
}

/**
 * Starts the renderer ahead of the first render. A fork costs the JS thread more the more memory
 * the process holds, so loadModel calls this before the weights are loaded.
 */
export function prestartTemplateRenderer(): void {
  host ??= new TemplateClient(TEMPLATE_LIMITS);
  host.prestart();
}

function failure(outcome: Exclude<RenderOutcome, { kind: 'text' }>, inputChars: number, signal: AbortSignal | undefined): Error {
  const why = (text: string) => new MinigptError('ERR_TEMPLATE', `${text}. ${fallback}.`);
  switch (outcome.kind) {
    case 'aborted':
      return new AbortedError('The chat template render was aborted', { cause: signal?.reason });
    case 'template':
      return why(`The chat template could not be rendered: ${outcome.message}`);
    case 'output':
      return why(
        `The chat template wrote ${outcome.chars} characters, over its limit of ${TEMPLATE_LIMITS.outputChars / 2 ** 20} Mi characters beyond the ${inputChars} characters of the messages; it may repeat without end`,
      );
    case 'time':
      return why(`The chat template did not finish within its time limit of ${TEMPLATE_LIMITS.timeMs / 1000} s; it may loop without end`);
    case 'memory':
      return why(`The chat template ran out of memory (${outcome.exit}): it built a string or list beyond the renderer's ${TEMPLATE_LIMITS.heapMb} MiB memory limit`);
    case 'crash':
      return why(`The chat template renderer failed during the render (${outcome.exit})`);
    case 'start':
      return why(`The chat template renderer process could not start: ${outcome.reason}`);
  }
}
