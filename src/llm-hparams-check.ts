/**
 * @internal
 * Values in a text model's header that llama.cpp asserts on (aborting the process) instead of
 * refusing the file: found by fuzzing the tiny test models and by reading the common part of
 * llama_model::load_hparams, llama_vocab::load and the ggml norm ops of the llama.cpp we build.
 * Anything llama.cpp refuses with an exception is left to it; only the asserts are mirrored.
 */
import { GgufValueType, getArray, getNumber, getString, type GgufHeader } from './gguf/types.js';

/** LLAMA_MAX_LAYERS in llama-hparams.h: per-layer arrays have this many slots. */
const MAX_LAYERS = 512;
/** LLAMA_MAX_EXPERTS in llama-hparams.h. */
const MAX_EXPERTS = 1024;
/** LLAMA_ROPE_SCALING_TYPES in llama-model.cpp; any other name is an assert. */
const ROPE_SCALING_TYPES = ['none', 'linear', 'yarn', 'longrope'];
/** LLAMA_TOKEN_TYPE_BYTE in llama.h. */
const TOKEN_TYPE_BYTE = 6;
const NORM_EPSILONS = ['attention.layer_norm_epsilon', 'attention.layer_norm_rms_epsilon', 'attention.group_norm_epsilon'];

/** Problems with the hyperparameters of architecture `arch` in `h`; empty when none. */
export function checkLlmHparams(h: GgufHeader, arch: string): string[] {
  const problems: string[] = [];
  const key = (name: string) => `${arch}.${name}`;

  const layers = getNumber(h, key('block_count'));
  if (layers !== undefined && !(layers >= 1 && layers <= MAX_LAYERS)) {
    problems.push(`${key('block_count')} is ${layers}; llama.cpp supports 1 to ${MAX_LAYERS} layers`);
  }
  const nextn = getNumber(h, key('nextn_predict_layers'));
  if (nextn !== undefined && layers !== undefined && nextn > layers) {
    problems.push(`${key('nextn_predict_layers')} (${nextn}) is more than the ${layers} layers`);
  }
  checkExperts(h, key, problems);

  // ggml's norm ops assert eps >= 0 when the graph runs, long after the load succeeded.
  for (const name of NORM_EPSILONS) {
    const eps = getNumber(h, key(name));
    if (eps !== undefined && !(eps >= 0 && Number.isFinite(eps))) problems.push(`${key(name)} is ${eps}; a norm epsilon must be a finite number >= 0`);
  }
  const scaling = getString(h, key('rope.scaling.type'));
  if (scaling !== undefined && !ROPE_SCALING_TYPES.includes(scaling)) {
    problems.push(`${key('rope.scaling.type')} is "${scaling}"; llama.cpp knows ${ROPE_SCALING_TYPES.join(', ')}`);
  }
  problems.push(...checkVocabulary(h));
  return problems;
}

function checkExperts(h: GgufHeader, key: (name: string) => string, problems: string[]): void {
  const experts = getNumber(h, key('expert_count')) ?? 0;
  const usedValues = getArray(h, key('expert_used_count')) ?? [getNumber(h, key('expert_used_count')) ?? 0];
  const used = Math.max(0, ...usedValues.map(Number));
  const groups = getNumber(h, key('expert_group_count')) ?? 0;
  const groupsUsed = getNumber(h, key('expert_group_used_count')) ?? 0;
  const what = `the mixture-of-experts counts (expert_count ${experts}, expert_used_count ${used}, expert_group_count ${groups}, expert_group_used_count ${groupsUsed})`;
  let ok: boolean;
  if (experts > 0) {
    ok = experts <= MAX_EXPERTS && used > 0 && used <= experts && groups < experts &&
      (groups <= 1 || (experts % groups === 0 && groupsUsed > 0 && groupsUsed < groups));
  } else {
    ok = used === 0 && groups === 0;
  }
  if (!ok) problems.push(`${what} are inconsistent`);
}

// llama_vocab::load asserts that every token's bytes are distinct. Tokens that are not valid
// UTF-8 (byte-level vocabularies hold some) were read with U+FFFD in place of the bad bytes, so
// two different ones can read the same: those are left out rather than wrongly called twins.
function checkVocabulary(h: GgufHeader): string[] {
  // WordPiece has no byte tokens: llama_vocab aborts when it renders one (at load, for its cache).
  const types = getArray(h, 'tokenizer.ggml.token_type');
  if (getString(h, 'tokenizer.ggml.model') === 'bert' && types?.some((t) => t === TOKEN_TYPE_BYTE)) {
    return ['tokenizer.ggml.model is "bert" (WordPiece) but the vocabulary has byte tokens, which WordPiece cannot have: the tokenizer model does not match the vocabulary'];
  }
  const tokens = getArray(h, 'tokenizer.ggml.tokens', GgufValueType.STRING) as string[] | undefined;
  if (!tokens) return [];
  const seen = new Set<string>();
  for (const [id, token] of tokens.entries()) {
    if (token.includes('\uFFFD')) continue;
    if (seen.has(token)) return [`tokenizer.ggml.tokens holds "${token.slice(0, 40)}" twice (again at id ${id}); every token must be distinct`];
    seen.add(token);
  }
  return [];
}
