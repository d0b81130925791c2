// Recognising what a non-GGUF file probably is, so the error can say what to do
// instead of only "bad magic". Internal to the gguf module.

/** "GGUF" read as a little-endian uint32. */
export const GGUF_MAGIC = 0x46554747;

// Pre-GGUF llama.cpp formats stored their magic as a native (little-endian) uint32.
const LEGACY_MAGICS = new Map<number, string>([
  [0x67676d6c, 'GGML (unversioned)'],
  [0x67676d66, 'GGMF'],
  [0x67676a74, 'GGJT'],
  [0x67676c61, 'GGLA (old LoRA)'],
  [0x6767736e, 'GGSN'],
]);

/** A sentence describing what `head` (the first bytes of a file) looks like, and what to do. */
export function describeForeignFile(head: Buffer): string {
  if (head.length >= 4) {
    const legacy = LEGACY_MAGICS.get(head.readUInt32LE(0));
    if (legacy) {
      return `It is in the old ${legacy} format from before GGUF (2023), which current llama.cpp no longer reads: ` +
        `get a GGUF version of the model, or convert it with llama.cpp's convert_llama_ggml_to_gguf.py.`;
    }
  }
  const text = head.toString('latin1');
  if (text.startsWith('PK\x03\x04')) {
    return 'It is a ZIP archive (a PyTorch .bin/.pt checkpoint?): convert the Hugging Face model with llama.cpp\'s convert_hf_to_gguf.py.';
  }
  if (head.length >= 9 && head[8] === 0x7b /* '{' */ && head.readBigUInt64LE(0) < 100_000_000n) {
    return 'It looks like a safetensors file: convert the Hugging Face model with llama.cpp\'s convert_hf_to_gguf.py.';
  }
  if (text.startsWith('version https://git-lfs')) {
    return 'It is a Git LFS pointer, not the model itself: run `git lfs pull` or download the file directly.';
  }
  const trimmed = text.trimStart().toLowerCase();
  if (trimmed.startsWith('<!doctype html') || trimmed.startsWith('<html')) {
    return 'It is an HTML page (a login or error page saved instead of the model?): download the file again.';
  }
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    return 'It looks like a JSON file (a config or tokenizer file?), not model weights.';
  }
  return 'Check that you passed the right file; models for llama.cpp end in .gguf.';
}

/** Printable rendering of the first four bytes, for messages. */
export function showMagic(head: Buffer): string {
  return [...head.subarray(0, 4)].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}
