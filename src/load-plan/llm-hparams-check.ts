/**
 * @internal
 * Values in a text model's header that llama.cpp asserts on (aborting the process) instead of
 * refusing the file: found by fuzzing the tiny test models and by reading the common part of
 * llama_model::load_hparams, llama_vocab::load and the ggml norm ops of the llama.cpp we build.
 * Anything llama.cpp refuses with an exception is left to it; only the asserts are mirrored.
 */
import { cutAtNul } from '../gguf/c-strings.js';
import { GgufValueType, getArray, getNumber, getString, type GgufHeader } from '../gguf/types.js';

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

// llama_vocab::load aborts on two tokens it reads as equal (GGML_ASSERT(id_to_token.size() ==
// token_to_id.size())). It reads each token as a C string, so a token ends at its first NUL,
// and a token left empty is renamed "[EMPTY_<id>]"; the bytes decide, not the decoded text.
function checkVocabulary(h: GgufHeader): string[] {
  // With no vocabulary llama_vocab::load returns before reading the tokens.
  const model = getString(h, 'tokenizer.ggml.model');
  if (model === 'no_vocab' || model === 'none') return [];
  // WordPiece has no byte tokens: llama_vocab aborts when it renders one (at load, for its cache).
  const types = getArray(h, 'tokenizer.ggml.token_type');
  if (model === 'bert' && types?.some((t) => t === TOKEN_TYPE_BYTE)) {
    return ['tokenizer.ggml.model is "bert" (WordPiece) but the vocabulary has byte tokens, which WordPiece cannot have: the tokenizer model does not match the vocabulary'];
  }
  const entry = h.metadata.get('tokenizer.ggml.tokens');
  if (!entry || entry.type !== GgufValueType.ARRAY || entry.arrayType !== GgufValueType.STRING) return [];
  const tokens = entry.value as string[];
  const seen = new Map<string, number>();
  for (const [id, token] of tokens.entries()) {
    const key = tokenIdentity(token, entry.undecodable?.get(id), id);
    const first = seen.get(key);
    if (first === undefined) {
      seen.set(key, id);
      continue;
    }
    const cut = [first, id].filter((i) => tokens[i].includes('\0') || entry.undecodable?.get(i)?.includes(0));
    const why = cut.length ? ` (llama.cpp reads a token only up to its first NUL byte, as token ${cut.join(' and ')} ${cut.length > 1 ? 'have' : 'has'})` : '';
    return [`tokenizer.ggml.tokens: tokens ${first} and ${id} are both ${JSON.stringify(shown(key))} to llama.cpp${why}; every token must be distinct: the vocabulary is corrupt`];
  }
  return [];
}

/**
 * What token `id` is to llama.cpp, as a map key: its bytes up to the first NUL, or
 * "[EMPTY_<id>]" if none. `raw` holds the bytes when the text was not valid UTF-8.
 */
function tokenIdentity(text: string, raw: Buffer | undefined, id: number): string {
  let cut: string;
  if (raw) {
    const nul = raw.indexOf(0);
    const bytes = nul < 0 ? raw : raw.subarray(0, nul);
    cut = bytes.toString('utf8');
    // Different invalid sequences decode alike: tell them apart by their bytes.
    if (cut.includes('\uFFFD')) return `b${bytes.toString('latin1')}`;
  } else {
    cut = cutAtNul(text);
  }
  return `t${cut === '' ? `[EMPTY_${id}]` : cut}`;
}

function shown(key: string): string {
  const text = key[0] === 'b' ? Buffer.from(key.slice(1), 'latin1').toString('utf8') : key.slice(1);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}
