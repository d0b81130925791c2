/**
 * @internal
 * The chat template renderer proper: compiles (cached by source) and renders Jinja templates,
 * in a worker thread of the renderer process (template-child.ts), which times it and ends it.
 */
import { parentPort } from 'node:worker_threads';
import { Environment, Template } from '@huggingface/jinja';
import type { RenderReply, RenderRequest } from './template-host.js';

/** What `range()` may return: far above any chat template's need, far below a heap's worth. */
const RANGE_LIMIT = 100_000;
/** Templates compiled, by source; a server may see many models, so this stays bounded. */
const CACHE_LIMIT = 32;

const compiled = new Map<string, Template>();

function compile(source: string): Template {
  let template = compiled.get(source);
  if (!template) {
    template = new Template(source);
    if (compiled.size >= CACHE_LIMIT) compiled.delete(compiled.keys().next().value!);
    compiled.set(source, template);
  }
  return template;
}

// @huggingface/jinja's range() fills an array before the loop starts, so range(1e9) grows it
// until V8 aborts; with this one it is an error the template's author can read.
function range(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) {
    stop = start;
    start = 0;
  }
  if (step === 0) throw new Error('range() step must not be zero');
  const count = Math.ceil((stop - start) / step);
  if (count > RANGE_LIMIT) throw new Error(`range() would make ${count} items; a chat template may make at most ${RANGE_LIMIT}`);
  const out: number[] = [];
  if (step > 0) for (let i = start; i < stop; i += step) out.push(i);
  else for (let i = start; i > stop; i += step) out.push(i);
  return out;
}

// Template#render declares its globals, range() among them, with Environment#set, and refuses
// to declare one twice; so ours goes in at that point. This process renders nothing else.
const declare = Environment.prototype.set;
Environment.prototype.set = function (this: Environment, name: string, value: unknown) {
  return declare.call(this, name, name === 'range' ? range : value);
};

function render(req: RenderRequest): RenderReply {
  try {
    const text = compile(req.source).render({
      messages: req.messages,
      add_generation_prompt: true,
      bos_token: req.bosToken,
      eos_token: req.eosToken,
    });
    if (text.length > req.maxChars) return { kind: 'output', id: req.id, chars: text.length };
    return { kind: 'text', id: req.id, text };
  } catch (err) {
    return { kind: 'template', id: req.id, message: err instanceof Error ? err.message : String(err) };
  }
}

parentPort!.on('message', (req: RenderRequest) => parentPort!.postMessage(render(req)));
parentPort!.postMessage({ kind: 'ready' } satisfies RenderReply);
