// Small helpers that collect human-readable problems about metadata keys, phrased for
// people who did not write the file. Internal to the header checks.
import { GgufValueType, type GgufHeader, type GgufMetadataEntry } from './types.js';

/** "uint32", "float32[]", ... for messages. */
export function describeType(e: GgufMetadataEntry): string {
  const name = (t: GgufValueType | undefined) => (t === undefined ? '?' : (GgufValueType[t] ?? `type ${t}`).toLowerCase());
  return e.type === GgufValueType.ARRAY ? `${name(e.arrayType)}[]` : name(e.type);
}

/** Collects problems; each check returns the value when it is present and well-typed. */
export class KeyChecker {
  readonly problems: string[] = [];

  constructor(private readonly h: GgufHeader) {}

  private typed(key: string, type: GgufValueType, label: string, required: boolean, why: string): GgufMetadataEntry | undefined {
    const e = this.h.metadata.get(key);
    if (!e) {
      if (required) this.problems.push(`required key ${key} (${label}) is missing${why}`);
      return undefined;
    }
    if (e.type !== type) {
      // llama.cpp's typed getters assert on the type: a wrong type aborts the process.
      this.problems.push(`key ${key} must be ${label} but is ${describeType(e)}`);
      return undefined;
    }
    return e;
  }

  u32(key: string, required = true, why = ''): number | undefined {
    const v = this.typed(key, GgufValueType.UINT32, 'uint32', required, why)?.value as number | undefined;
    if (v !== undefined && v > 0x7fffffff) {
      this.problems.push(`key ${key} is ${v}, larger than llama.cpp accepts (2147483647)`);
      return undefined;
    }
    return v;
  }

  i32(key: string, required = true, why = ''): number | undefined {
    return this.typed(key, GgufValueType.INT32, 'int32', required, why)?.value as number | undefined;
  }

  f32(key: string, required = true, why = ''): number | undefined {
    return this.typed(key, GgufValueType.FLOAT32, 'float32', required, why)?.value as number | undefined;
  }

  bool(key: string, required = true, why = ''): boolean | undefined {
    return this.typed(key, GgufValueType.BOOL, 'bool', required, why)?.value as boolean | undefined;
  }

  str(key: string, required = true, why = ''): string | undefined {
    return this.typed(key, GgufValueType.STRING, 'a string', required, why)?.value as string | undefined;
  }

  /** An array whose elements have `elementType`, with at least `minLength` elements. */
  array(key: string, elementType: GgufValueType, minLength: number, required = true, why = ''): GgufMetadataEntry['value'] | undefined {
    const label = `${GgufValueType[elementType].toLowerCase()}[${minLength > 0 ? `>=${minLength}` : ''}]`;
    const e = this.typed(key, GgufValueType.ARRAY, `an array of ${label}`, required, why);
    if (!e) return undefined;
    const arr = e.value as unknown[];
    if (e.arrayType !== elementType) {
      this.problems.push(`key ${key} must be an array of ${GgufValueType[elementType].toLowerCase()} but is ${describeType(e)}`);
      return undefined;
    }
    if (arr.length < minLength) {
      this.problems.push(`key ${key} has ${arr.length} elements; at least ${minLength} are needed`);
      return undefined;
    }
    return e.value;
  }
}
