/**
 * @internal
 * Chat templates: the Jinja template a GGUF carries (`tokenizer.chat_template`), rendered
 * with @huggingface/jinja. Images appear in messages as marker strings that the session
 * splits out again after rendering.
 */
import { Template } from '@huggingface/jinja';
import { MinigptError } from './errors.js';

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

const compiled = new Map<string, Template>();

export function renderChat(source: string, messages: ChatMessage[], ctx: RenderContext): string {
  let template = compiled.get(source);
  try {
    if (!template) {
      template = new Template(source);
      compiled.set(source, template);
    }
    let text = template.render({
      messages,
      add_generation_prompt: true,
      bos_token: ctx.bosText ?? '',
      eos_token: ctx.eosText ?? '',
    });
    if (ctx.addsBos && ctx.bosText && text.startsWith(ctx.bosText)) text = text.slice(ctx.bosText.length);
    return text;
  } catch (err) {
    throw new MinigptError('ERR_TEMPLATE', `The chat template could not be rendered: ${(err as Error).message}. Pass createSession({ template: 'none' }) to send prompts as written.`, { cause: err });
  }
}
