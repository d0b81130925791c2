/**
 * @internal
 * Built-in conversation formats of projectors that carry their own (MiniGPT-4), chosen from
 * the projector GGUF's `blip2.prompt_template`. Each renders the whole conversation; images
 * appear as the session's marker strings.
 */

export type BuiltinTemplate = 'minigpt4-v0' | 'minigpt4-llama2';

export interface BuiltinTurn {
  role: 'user' | 'assistant';
  /** Text pieces and image markers in order; `image` tells which are images. */
  parts: Array<{ text: string; image: boolean }>;
}

const V0_SYSTEM =
  'Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. Please answer my questions.';

export function isBuiltinTemplate(name: string | undefined): name is BuiltinTemplate {
  return name === 'minigpt4-v0' || name === 'minigpt4-llama2';
}

/** Strings that end an answer in this format. */
export function builtinStops(name: BuiltinTemplate): string[] {
  return name === 'minigpt4-v0' ? ['###'] : [];
}

// MiniGPT-4 wraps each image as <Img>…</Img> and joins the text after it with one space.
function userContent(turn: BuiltinTurn): string {
  let out = '';
  let afterImage = false;
  for (const part of turn.parts) {
    if (part.image) {
      out += `<Img>${part.text}</Img>`;
      afterImage = true;
    } else {
      out += afterImage && part.text.length > 0 && !/^\s/.test(part.text) ? ` ${part.text}` : part.text;
      afterImage = false;
    }
  }
  return out;
}

function answer(turn: BuiltinTurn): string {
  return turn.parts.map((p) => p.text).join('');
}

export function renderBuiltin(name: BuiltinTemplate, turns: BuiltinTurn[]): string {
  if (name === 'minigpt4-v0') {
    let text = V0_SYSTEM;
    for (const t of turns) text += t.role === 'user' ? `###Human: ${userContent(t)}###Assistant: ` : answer(t);
    return text;
  }
  // Llama-2: BOS before the first turn comes from the tokenizer; later turns write it out.
  let text = '';
  turns.forEach((t, i) => {
    if (t.role === 'user') text += `${i === 0 ? '' : '<s>'}[INST] ${userContent(t)} [/INST] `;
    else text += answer(t);
  });
  return text;
}
