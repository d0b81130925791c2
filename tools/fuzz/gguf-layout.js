// Where each header field of a well-formed GGUF lies, so the fuzzer can aim its edits at the
// bytes a parser trusts (counts, lengths, type tags, shapes, offsets) instead of spending
// most mutations on tensor data, which any value is valid for.

const SCALAR_BYTES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const ARRAY = 9;

/**
 * The header fields of `bytes` (a GGUF this repository wrote), in file order. Each is
 * `{ kind, at, size, value, key? }`: kind names what the field means (see below), `value`
 * its current value as a BigInt for integers (a number for floats), `key` the metadata key
 * or tensor name it belongs to. Also returns `headerEnd`, where the tensor data begins.
 *
 * kinds: magic, version, tensor-count, kv-count, key-length, value-type, string-length,
 * scalar (with `type`), array-type, array-length, element (with `type`), element-length
 * (of a string element), tensor-name-length, tensor-ndims,
 * tensor-dim, tensor-type, tensor-offset.
 */
export function ggufLayout(bytes) {
  const fields = [];
  let pos = 0;
  const field = (kind, size, extra = {}) => {
    const at = pos;
    let value;
    if (size === 8) value = bytes.readBigUInt64LE(at);
    else if (size === 4) value = BigInt(bytes.readUInt32LE(at));
    else if (size === 2) value = BigInt(bytes.readUInt16LE(at));
    else value = BigInt(bytes[at]);
    fields.push({ kind, at, size, value, ...extra });
    pos += size;
    return value;
  };
  const string = (kind, extra) => {
    const n = Number(field(kind, 8, extra));
    const s = bytes.toString('utf8', pos, pos + n);
    pos += n;
    return s;
  };
  const scalar = (type, key) => {
    if (type === STRING) return void string('string-length', { key });
    field('scalar', SCALAR_BYTES[type], { key, type });
  };

  field('magic', 4);
  field('version', 4);
  const nTensors = Number(field('tensor-count', 8));
  const nKv = Number(field('kv-count', 8));
  for (let i = 0; i < nKv; i++) {
    const key = string('key-length');
    const type = Number(field('value-type', 4, { key }));
    if (type !== ARRAY) {
      scalar(type, key);
      continue;
    }
    const elementType = Number(field('array-type', 4, { key }));
    const n = Number(field('array-length', 8, { key }));
    // Elements get their own kind, so the vocabulary does not swamp the other scalars.
    for (let j = 0; j < n; j++) {
      const before = fields.length;
      scalar(elementType, key);
      for (const f of fields.slice(before)) f.kind = f.kind === 'scalar' ? 'element' : 'element-length';
    }
  }
  for (let i = 0; i < nTensors; i++) {
    const name = string('tensor-name-length');
    const nDims = Number(field('tensor-ndims', 4, { key: name }));
    for (let d = 0; d < nDims; d++) field('tensor-dim', 8, { key: name, dim: d });
    field('tensor-type', 4, { key: name });
    field('tensor-offset', 8, { key: name });
  }
  return { fields, headerEnd: pos };
}
