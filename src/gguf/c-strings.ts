/**
 * @internal
 * The header as llama.cpp's loaders see it. gguf.cpp stores keys, string values and tensor
 * names with their full length, but everything after it reads them as C strings: keys are
 * found with strcmp (the first key whose text up to a NUL matches wins), string values and
 * tensor names are copied through `c_str()`. A check that looks at the full strings would
 * judge a different file from the one llama.cpp loads.
 */
import { GgufValueType, type GgufHeader, type GgufMetadataEntry, type GgufTensorInfo } from './types.js';

/** `s` up to its first NUL, as a C string reads it. */
export function cutAtNul(s: string): string {
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

/**
 * `h` with keys, string values and tensor names cut at their first NUL, keeping the first of
 * the entries whose cut keys (or names) are equal, as gguf_find_key does. String arrays are
 * left whole: the vocabulary check applies llama.cpp's own per-token rules to them.
 */
export function asLlamaCppSeesIt(h: GgufHeader): GgufHeader {
  let changed = false;
  const metadata = new Map<string, GgufMetadataEntry>();
  for (const [key, entry] of h.metadata) {
    const cut = cutAtNul(key);
    const value = entry.type === GgufValueType.STRING ? cutAtNul(entry.value as string) : entry.value;
    if (cut !== key || value !== entry.value) changed = true;
    if (!metadata.has(cut)) metadata.set(cut, value === entry.value && cut === key ? entry : { ...entry, key: cut, value });
  }
  // gguf.cpp itself refuses tensor names equal up to a NUL, so there are no twins to choose from.
  const tensors = h.tensors.map((t): GgufTensorInfo => {
    const cut = cutAtNul(t.name);
    if (cut === t.name) return t;
    changed = true;
    return { ...t, name: cut };
  });
  if (!changed) return h;
  const tensorsByName = new Map<string, GgufTensorInfo>();
  for (const t of tensors) if (!tensorsByName.has(t.name)) tensorsByName.set(t.name, t);
  return { ...h, metadata, tensors, tensorsByName };
}
