/**
 * @internal
 * Checks a BLIP-2 projector GGUF's header (docs/blip2-gguf.md) before native code loads it:
 * keys present with the right types and sizes that agree with each other and with the text
 * model. The native loader checks every tensor's shape again and names any that is wrong.
 */
import { asLlamaCppSeesIt } from '../gguf/c-strings.js';
import { getNumber, getString, type GgufHeader } from '../gguf/types.js';

const requiredSizes = [
  'blip2.vision.image_size',
  'blip2.vision.patch_size',
  'blip2.vision.embedding_length',
  'blip2.vision.block_count',
  'blip2.vision.attention.head_count',
  'blip2.vision.feed_forward_length',
  'blip2.projection.output_length',
];
const qformerSizes = [
  'blip2.qformer.embedding_length',
  'blip2.qformer.block_count',
  'blip2.qformer.attention.head_count',
  'blip2.qformer.feed_forward_length',
  'blip2.qformer.query_count',
];

const epsilons = ['blip2.vision.attention.layer_norm_epsilon', 'blip2.vision.ln_vision_epsilon', 'blip2.qformer.layer_norm_epsilon'];

export function checkBlip2Header(h: GgufHeader, textModelEmbd: number | undefined): string[] {
  h = asLlamaCppSeesIt(h); // keys, names and string values up to a NUL, as the loaders read them
  const problems: string[] = [];
  const variant = getString(h, 'blip2.variant') ?? 'qformer';
  if (variant !== 'qformer' && variant !== 'patch_group') problems.push(`unknown blip2.variant "${variant}"`);
  const sizes = variant === 'qformer' ? [...requiredSizes, ...qformerSizes] : requiredSizes;
  const value: Record<string, number> = {};
  for (const key of sizes) {
    const v = getNumber(h, key);
    if (v === undefined || !Number.isInteger(v) || v <= 0) problems.push(`key ${key} is missing or not a positive integer`);
    else value[key] = v;
  }
  // ggml's norm op asserts eps >= 0 when an image is encoded, long after the load succeeded.
  for (const key of epsilons) {
    const eps = getNumber(h, key);
    if (eps !== undefined && !(eps >= 0 && Number.isFinite(eps))) problems.push(`key ${key} is ${eps}; a norm epsilon must be a finite number >= 0`);
  }
  if (problems.length) return problems;
  const image = value['blip2.vision.image_size'];
  const patch = value['blip2.vision.patch_size'];
  if (image % patch !== 0) problems.push(`image_size ${image} is not a multiple of patch_size ${patch}`);
  if (value['blip2.vision.embedding_length'] % value['blip2.vision.attention.head_count'] !== 0)
    problems.push('the vision width is not a multiple of its head count');
  if (variant === 'qformer' && value['blip2.qformer.embedding_length'] % value['blip2.qformer.attention.head_count'] !== 0)
    problems.push('the Q-Former hidden size is not a multiple of its head count');
  problems.push(...checkBlockCounts(h, variant, value));
  const out = value['blip2.projection.output_length'];
  if (textModelEmbd !== undefined && out !== textModelEmbd)
    problems.push(`projector output size ${out} does not match the text model's embedding size ${textModelEmbd}`);
  for (const name of ['v.patch_embd.weight', 'v.position_embd', 'v.ln_vision.weight', 'proj.weight'])
    if (!h.tensorsByName.has(name)) problems.push(`missing tensor ${name}`);
  return problems;
}

// Weights for more blocks than the header's block_count would be silently ignored: the encoder
// would run with fewer layers than it was trained with and give plausible-looking nonsense.
function checkBlockCounts(h: GgufHeader, variant: string, value: Record<string, number>): string[] {
  const problems: string[] = [];
  const highest = (prefix: string) => {
    const pattern = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.(\\d+)\\.`);
    let max = -1;
    for (const name of h.tensorsByName.keys()) {
      const m = pattern.exec(name);
      if (m) max = Math.max(max, Number(m[1]));
    }
    return max;
  };
  const redo = 'the hyperparameters do not match the weights; convert the checkpoint again (npx minigpt convert)';
  const vision = value['blip2.vision.block_count'];
  const lastVision = highest('v.blk');
  if (lastVision >= vision) problems.push(`the file has weights for vision block ${lastVision} but blip2.vision.block_count is ${vision}: ${redo}`);
  if (variant !== 'qformer') return problems;
  const qformer = value['blip2.qformer.block_count'];
  const lastQformer = highest('qf.blk');
  if (lastQformer >= qformer) problems.push(`the file has weights for Q-Former block ${lastQformer} but blip2.qformer.block_count is ${qformer}: ${redo}`);
  const frequency = getNumber(h, 'blip2.qformer.cross_attention_frequency');
  if (frequency !== undefined && Number.isInteger(frequency) && frequency > 0) {
    for (let i = 0; i < qformer; i++) {
      if (i % frequency !== 0 && h.tensorsByName.has(`qf.blk.${i}.cross_q.weight`)) {
        problems.push(`Q-Former block ${i} has cross-attention weights but blip2.qformer.cross_attention_frequency ${frequency} gives it none: ${redo}`);
        break;
      }
    }
  }
  return problems;
}
