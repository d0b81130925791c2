/**
 * @internal
 * The `general.*` keys llama.cpp's converter derives for a Hugging Face folder: a ported
 * subset of gguf-py's `Metadata` (metadata.py) and `size_label` (utility.py), so our GGUF
 * names the model as `convert_hf_to_gguf.py` does. Sources, in the script's order of
 * precedence: config.json's `_name_or_path`, the folder's name, generation_config.json's
 * sampling settings, the parameter count. The model card (README.md front matter) is not read.
 */
import { basename } from 'node:path';
import { kv } from '../gguf/write.js';
import type { GgufMetadataEntry } from '../gguf/types.js';

interface IdComponents {
  name?: string;
  organization?: string;
  basename?: string;
  finetune?: string;
  version?: string;
  sizeLabel?: string;
}

/** Python's `str.islower()`: some cased character, and no upper-case one. */
function isLower(s: string): boolean {
  let cased = false;
  for (const ch of s) {
    if (ch.toLowerCase() !== ch.toUpperCase()) {
      if (ch !== ch.toLowerCase()) return false;
      cased = true;
    }
  }
  return cased;
}

/** Python's `str.title()`: a letter after a non-letter is upper-cased, the rest lower-cased. */
function title(s: string): string {
  let out = '';
  let prevCased = false;
  for (const ch of s) {
    const cased = ch.toLowerCase() !== ch.toUpperCase();
    out += cased ? (prevCased ? ch.toLowerCase() : ch.toUpperCase()) : ch;
    prevCased = cased;
  }
  return out;
}

/** gguf-py `Metadata.id_to_title`. */
export function idToTitle(s: string): string {
  return s.trim().replace(/-/g, ' ').split(/\s+/).filter((w) => w.length > 0)
    .map((w) => (isLower(w) && !/^(v\d+(?:\.\d+)*|\d.*)$/.test(w) ? title(w) : w)).join(' ');
}

// Python's float() on the strings the size pattern lets through (digits with one dot).
function pyFloat(s: string): number | undefined {
  return /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(s) ? Number(s) : undefined;
}

const isDecimal = (c: string | undefined): boolean => c !== undefined && /^[0-9]$/.test(c);
const isAlpha = (c: string | undefined): boolean => c !== undefined && /^\p{L}$/u.test(c);

/** gguf-py `Metadata.get_model_id_components`. */
export function modelIdComponents(modelId: string | undefined, totalParams: number): IdComponents {
  if (modelId === undefined) return {};
  if (modelId.includes(' ')) return { name: modelId };
  let org: string | undefined;
  let full = modelId;
  const slash = modelId.indexOf('/');
  if (slash >= 0) {
    org = modelId.slice(0, slash);
    full = modelId.slice(slash + 1);
  }
  if (org !== undefined && org.length > 0 && org[0] === '.') org = undefined;
  const parts = full.split('-').filter((p) => p.length > 0);
  const types = parts.map(() => new Set<string>());
  for (let i = 0; i < parts.length; i++) {
    let part = parts[i];
    const t = types[i];
    if (/^(v|iter)?\d+([.]\d+)*$/i.test(part)) {
      t.add('version');
    } else if (/^(i?q\d(_\w)*|b?fp?(16|32))$/i.test(part)) {
      t.add('type');
      parts[i] = part.toUpperCase();
    } else if (i > 0 && /^(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)$/i.test(part)) {
      part = part.replace('_', '.');
      if (isDecimal(part[part.length - 1])) part = part.slice(0, -2) + '.' + part[part.length - 1] + part[part.length - 2];
      if (part.length > 1 && isDecimal(part[part.length - 2]) && 'kmbt'.includes(part[part.length - 1])) {
        part = part.slice(0, -1) + part[part.length - 1].toUpperCase();
      }
      if (totalParams !== 0) {
        const value = pyFloat(part.slice(0, -1));
        if (value !== undefined) {
          const exp = ' KMBT'.indexOf(part[part.length - 1]);
          const labelParams = value * 1000 ** exp;
          if ((totalParams < 0 && labelParams < Math.floor(Math.abs(totalParams) / 8)) ||
              (totalParams > 0 && Math.abs(labelParams - totalParams) > Math.floor((7 * totalParams) / 8))) {
            t.add('finetune');
            part = part.slice(0, -1) + part[part.length - 1].toLowerCase();
          }
        }
      }
      if (t.size === 0) t.add('size_label');
      parts[i] = part;
    } else if (i > 0 && /^(chat|instruct|vision|lora)$/i.test(part)) {
      if (totalParams < 0 && part.toLowerCase() === 'lora') t.add('type');
      else t.add('finetune');
    }
  }
  if (parts.some((p, i) => types[i].has('size_label') && [...p].some(isDecimal))) {
    for (let i = 0; i < parts.length; i++) {
      if (types[i].has('size_label') && [...parts[i]].every(isAlpha)) types[i].delete('size_label');
    }
  }
  let atStart = true;
  for (let i = 0; i < parts.length; i++) {
    const t = types[i];
    if (atStart && ((t.size === 0 && isAlpha(parts[i][0])) || t.has('version'))) {
      t.add('basename');
    } else {
      atStart = false;
      if (t.size === 0) t.add('finetune');
    }
  }
  for (let i = parts.length - 1; i >= 0; i--) {
    if (types[i].has('basename') && types[i].size > 1) types[i].delete('basename');
    else break;
  }
  const join = (pick: (i: number) => boolean, unique = false): string | undefined => {
    let list = parts.filter((_, i) => pick(i));
    if (unique) list = [...new Set(list)];
    return list.length > 0 ? list.join('-') : undefined;
  };
  let base = join((i) => types[i].has('basename'));
  const sizeLabel = join((i) => types[i].has('size_label'), true);
  const finetune = join((i) => types[i].has('finetune'));
  const version = join((i) => types[i].has('version') && !types[i].has('basename'));
  if (sizeLabel === undefined && finetune === undefined && version === undefined) base = undefined;
  return { name: full, organization: org, basename: base, finetune, version, sizeLabel };
}

// Python's round(): halves to even.
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** gguf-py `model_weight_count_rounded_notation` (min_digits 2). */
export function sizeLabel(count: number): string {
  let scaled: number;
  let suffix: string;
  if (count > 1e12) [scaled, suffix] = [count * 1e-12, 'T'];
  else if (count > 1e9) [scaled, suffix] = [count * 1e-9, 'B'];
  else if (count > 1e6) [scaled, suffix] = [count * 1e-6, 'M'];
  else [scaled, suffix] = [count * 1e-3, 'K'];
  const digits = String(roundHalfEven(scaled)).replace(/^0+/, '').length;
  return `${scaled.toFixed(Math.max(2 - digits, 0))}${suffix}`;
}

const SAMPLING: [key: string, source: string[], type: 'i32' | 'f32' | 'str'][] = [
  ['sequence', ['sequence'], 'str'],
  ['top_k', ['top_k'], 'i32'],
  ['top_p', ['top_p'], 'f32'],
  ['min_p', ['min_p'], 'f32'],
  ['xtc_probability', ['xtc_probability'], 'f32'],
  ['xtc_threshold', ['xtc_threshold'], 'f32'],
  ['temp', ['temperature'], 'f32'],
  ['penalty_last_n', ['penalty_last_n'], 'i32'],
  ['penalty_repeat', ['penalty_repeat', 'repetition_penalty'], 'f32'],
  ['mirostat', ['mirostat'], 'i32'],
  ['mirostat_tau', ['mirostat_tau'], 'f32'],
  ['mirostat_eta', ['mirostat_eta'], 'f32'],
];

/**
 * The `general.*` entries after `general.architecture` and `general.type`, in the script's order.
 * `folder` is the checkpoint folder, `totalParams` the element count of all written tensors.
 */
export function generalMetadata(folder: string, config: Record<string, unknown>, generation: Record<string, unknown> | undefined, totalParams: number): GgufMetadataEntry[] {
  const meta: IdComponents = {};
  const take = (c: IdComponents): void => {
    if (meta.name === undefined && c.name !== undefined) meta.name = idToTitle(c.name);
    if (meta.organization === undefined && c.organization !== undefined) meta.organization = idToTitle(c.organization);
    meta.basename ??= c.basename;
    meta.finetune ??= c.finetune;
    meta.version ??= c.version;
    meta.sizeLabel ??= c.sizeLabel;
  };
  const nameOrPath = config._name_or_path;
  if (typeof nameOrPath === 'string' && nameOrPath.split('/').length - 1 <= 1) take(modelIdComponents(nameOrPath, totalParams));
  const dirName = basename(folder);
  take(modelIdComponents(dirName, totalParams));
  meta.name ??= dirName;
  if (meta.sizeLabel === undefined && totalParams > 0) meta.sizeLabel = sizeLabel(totalParams);

  const out: GgufMetadataEntry[] = [];
  for (const [key, sources, type] of SAMPLING) {
    // dict.get(a, dict.get(b)): the first key present wins, even when it holds null.
    const source = generation && sources.find((s) => Object.hasOwn(generation, s));
    const v = source ? generation[source] : undefined;
    if (v === undefined || v === null) continue;
    const full = `general.sampling.${key}`;
    if (type === 'str') { if (typeof v === 'string' && v) out.push(kv.str(full, v)); }
    else if (typeof v === 'number') out.push(type === 'i32' ? kv.i32(full, v) : kv.f32(full, v));
  }
  // add_string skips empty strings, as here.
  const str = (key: string, v: string | undefined): void => { if (v) out.push(kv.str(key, v)); };
  str('general.name', meta.name);
  str('general.version', meta.version);
  str('general.organization', meta.organization);
  str('general.finetune', meta.finetune);
  str('general.basename', meta.basename);
  str('general.size_label', meta.sizeLabel);
  return out;
}
