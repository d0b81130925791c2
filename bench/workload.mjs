// The one workload every contender runs, and the prompts it uses.
//
// Prompts are made of words that are each a single token of the bench vocabulary (see
// models.mjs), so a prompt of N words is N tokens for every contender, whichever tokenizer
// call it goes through. Each run starts with a different word: bindings that keep their
// context between calls (and reuse a matching prefix) must evaluate the whole prompt again,
// image included, like a fresh question would.

export const DEFAULTS = { promptTokens: 128, genTokens: 64, threads: 2, runs: 5, ctx: 2048 };

const WORDS = [
  'the', 'is', 'picture', 'of', 'in', 'and', 'to', 'this', 'that', 'image', 'photo', 'world', 'you', 'it', 'on',
  'with', 'describe', 'see', 'there', 'are', 'color', 'cat', 'dog', 'red', 'blue', 'green', 'white', 'black',
  'yellow', 'gray', 'man', 'woman', 'car', 'tree', 'house', 'sky', 'water', 'person', 'people', 'shows', 'small',
  'large', 'big', 'one', 'two', 'three', 'what', 'where', 'how', 'who', 'can', 'do', 'does', 'yes', 'no', 'not',
  'be', 'has', 'have', 'at', 'for', 'from', 'by', 'as', 'was', 'were', 'will', 'would', 'could', 'some', 'many',
  'very', 'good', 'time', 'day', 'like', 'look', 'looks', 'left', 'right', 'top', 'bottom', 'center', 'background',
  'front', 'sitting', 'standing', 'holding', 'wearing', 'table', 'room', 'street', 'grass', 'light', 'dark',
  'bright', 'square', 'circle', 'shape', 'pattern', 'stripes', 'text', 'number', 'answer', 'question',
];

/** `n` words (n tokens); `run` picks the first word so consecutive runs never share a prefix. */
export function promptWords(n, run = 0) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(WORDS[(i * 7 + run * 13) % WORDS.length]);
  return out;
}

/** The text prompt of `n` tokens for run `run`. */
export function promptText(n, run = 0) {
  return promptWords(n, run).join(' ');
}

/**
 * The image turn in ChatML (the bench model's chat template): the first word, the image(s),
 * then the other n - 1 words. `marker` stands for each image in tools that take text with
 * markers (libmtmd's `<__media__>`).
 */
export function imagePromptParts(n, run, images = 1) {
  const words = promptWords(n, run);
  return { before: `${words[0]} `, after: `\n${words.slice(1).join(' ')}`, images };
}

export const CHATML = { userStart: '<|im_start|>user\n', userEnd: '<|im_end|>\n<|im_start|>assistant\n' };

/** min, median (lower middle for even counts) of the finite values of `xs`. */
export function summary(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { min: NaN, median: NaN, max: NaN, n: 0 };
  return { min: v[0], median: v[Math.floor((v.length - 1) / 2)], max: v[v.length - 1], n: v.length };
}
