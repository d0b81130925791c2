/**
 * @internal
 * A conversation as the native prompt parts: rendered in its format (a Jinja chat template, a
 * built-in MiniGPT-4 format, or as written), images split out where they stand, and the
 * caller's and the model's text marked plain, so that only the format's own markup can be read
 * as special tokens (a user typing `<|im_end|>` cannot close their turn).
 */
import { randomBytes } from 'node:crypto';
import { MinigptError } from './errors.js';
import { nativeOf, type ImageEmbedding } from './embedding.js';
import type { NativePromptPart } from './native/binding.js';
import { renderBuiltin, type BuiltinTemplate } from './prompts.js';
import { renderChat, type ChatMessage, type RenderContext } from './template.js';

export type ConversationPart = string | ImageEmbedding;

export interface ConversationTurn {
  role: 'system' | 'user' | 'assistant';
  parts: ConversationPart[];
}

/** How turns become text: a Jinja template, a built-in format, or the parts as written. */
export type PromptFormat = { jinja: string } | { builtin: BuiltinTemplate } | { asWritten: true };

export interface PromptOptions {
  format: PromptFormat;
  systemPrompt: string | undefined;
  /** Parse special tokens in the caller's and the model's text too (no plain marking). */
  parseSpecial: boolean;
  tokenText: RenderContext;
}

export class PromptBuilder {
  readonly #options: PromptOptions;
  // Markers no caller can guess; the template moves them with the text they stand for.
  readonly #prefix = `__minigpt_${randomBytes(6).toString('hex')}_`;
  readonly #markers: RegExp;

  constructor(options: PromptOptions) {
    this.#options = options;
    // Case-insensitive: a template that upper-cases content moves the markers, it does not hide them.
    this.#markers = new RegExp(`<(/?)${this.#prefix}(?:image_(\\d+)|plain)>`, 'gi');
  }

  /** The whole conversation; the native side evaluates only what its context does not hold yet. */
  async build(turns: ConversationTurn[], signal?: AbortSignal): Promise<NativePromptPart[]> {
    const images: ImageEmbedding[] = [];
    const textOf = (parts: ConversationPart[]) => parts.map((p) => (typeof p === 'string' ? this.#plain(p) : this.#image(images, p))).join('');
    const { format } = this.#options;
    let text: string;
    if ('builtin' in format) {
      text = renderBuiltin(
        format.builtin,
        turns.map((t) => ({
          // Session.chat refuses system turns for these formats, which have none.
          role: t.role === 'assistant' ? 'assistant' : 'user',
          parts: t.parts.map((p) => (typeof p === 'string' ? { text: this.#plain(p), image: false } : { text: this.#image(images, p), image: true })),
        })),
      );
    } else if ('asWritten' in format) {
      text = turns.map((t) => textOf(t.parts)).join('');
    } else {
      const messages: ChatMessage[] = [];
      // A conversation that brings its own system turn replaces the session's.
      if (this.#options.systemPrompt !== undefined && !turns.some((t) => t.role === 'system')) messages.push({ role: 'system', content: this.#plain(this.#options.systemPrompt) });
      for (const t of turns) messages.push({ role: t.role, content: textOf(t.parts) });
      text = await renderChat(format.jinja, messages, this.#options.tokenText, { signal });
    }
    return this.#split(text, images);
  }

  #image(images: ImageEmbedding[], image: ImageEmbedding): string {
    return `<${this.#prefix}image_${images.push(image) - 1}>`;
  }

  // Whitespace at the edges stays outside the markers, so a template that trims message content
  // (many do) still trims it.
  #plain(text: string): string {
    if (this.#options.parseSpecial || text.length === 0) return text;
    const lead = /^\s*/.exec(text)![0].length;
    const trail = lead === text.length ? 0 : /\s*$/.exec(text)![0].length;
    const open = `<${this.#prefix}plain>`;
    const close = `</${this.#prefix}plain>`;
    return `${text.slice(0, lead)}${open}${text.slice(lead, text.length - trail)}${close}${text.slice(text.length - trail)}`;
  }

  // Rendered text -> text parts (with the UTF-8 byte ranges that are plain) and images.
  #split(rendered: string, images: ImageEmbedding[]): NativePromptPart[] {
    const out: NativePromptPart[] = [];
    let text = '';
    let bytes = 0;
    let plain: number[] = [];
    let inPlain = false;
    const addText = (chunk: string) => {
      if (chunk.length === 0) return;
      const n = Buffer.byteLength(chunk, 'utf8');
      if (inPlain) {
        if (plain.length > 0 && plain[plain.length - 1] === bytes) plain[plain.length - 1] = bytes + n;
        else plain.push(bytes, bytes + n);
      }
      text += chunk;
      bytes += n;
    };
    const flush = () => {
      if (text.length > 0) out.push(plain.length > 0 ? { text, addSpecial: false, plain } : { text, addSpecial: false });
      text = '';
      bytes = 0;
      plain = [];
    };
    let last = 0;
    for (const m of rendered.matchAll(this.#markers)) {
      addText(rendered.slice(last, m.index));
      last = m.index + m[0].length;
      const closing = m[1] === '/';
      if (m[2] !== undefined) {
        const image = images[Number(m[2])];
        if (closing || inPlain || !image) throw altered();
        flush();
        out.push(image[nativeOf]);
      } else if (closing !== inPlain) {
        throw altered();
      } else {
        inPlain = !closing;
      }
    }
    if (inPlain) throw altered();
    addText(rendered.slice(last));
    flush();
    const first = out[0];
    if (first && !('nTokens' in first)) first.addSpecial = true;
    else out.unshift({ text: '', addSpecial: true });
    return out;
  }
}

function altered(): MinigptError {
  return new MinigptError(
    'ERR_TEMPLATE',
    'The chat template changed the text of a message instead of inserting it as given, so the caller\'s text cannot be kept apart from the template\'s markup; ' +
      'pass createSession({ parseSpecial: true }) to read special tokens in message text too, or use another template',
  );
}
