/**
 * GGUF data model: value and tensor type ids, the parsed header shape, and typed
 * metadata getters. Numbers mirror ggml.h / gguf.h of the llama.cpp we build.
 */

/** Type tag of a GGUF metadata value (gguf.h `enum gguf_type`). */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** Tensor element type (ggml.h `enum ggml_type`). Ids 4, 5 and 31..38 were removed upstream. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
  Q2_0 = 42,
}

/** Elements per block and bytes per block of one ggml type. */
export interface GgmlTypeTraits {
  readonly name: string;
  readonly blockSize: number;
  readonly typeSize: number;
}

// Values checked against sizeof(block_*) in ggml-common.h and ggml.c's type_traits.
const TRAITS: ReadonlyMap<GgmlType, GgmlTypeTraits> = new Map<GgmlType, GgmlTypeTraits>([
  [GgmlType.F32, { name: 'f32', blockSize: 1, typeSize: 4 }],
  [GgmlType.F16, { name: 'f16', blockSize: 1, typeSize: 2 }],
  [GgmlType.Q4_0, { name: 'q4_0', blockSize: 32, typeSize: 18 }],
  [GgmlType.Q4_1, { name: 'q4_1', blockSize: 32, typeSize: 20 }],
  [GgmlType.Q5_0, { name: 'q5_0', blockSize: 32, typeSize: 22 }],
  [GgmlType.Q5_1, { name: 'q5_1', blockSize: 32, typeSize: 24 }],
  [GgmlType.Q8_0, { name: 'q8_0', blockSize: 32, typeSize: 34 }],
  [GgmlType.Q8_1, { name: 'q8_1', blockSize: 32, typeSize: 36 }],
  [GgmlType.Q2_K, { name: 'q2_K', blockSize: 256, typeSize: 84 }],
  [GgmlType.Q3_K, { name: 'q3_K', blockSize: 256, typeSize: 110 }],
  [GgmlType.Q4_K, { name: 'q4_K', blockSize: 256, typeSize: 144 }],
  [GgmlType.Q5_K, { name: 'q5_K', blockSize: 256, typeSize: 176 }],
  [GgmlType.Q6_K, { name: 'q6_K', blockSize: 256, typeSize: 210 }],
  [GgmlType.Q8_K, { name: 'q8_K', blockSize: 256, typeSize: 292 }],
  [GgmlType.IQ2_XXS, { name: 'iq2_xxs', blockSize: 256, typeSize: 66 }],
  [GgmlType.IQ2_XS, { name: 'iq2_xs', blockSize: 256, typeSize: 74 }],
  [GgmlType.IQ3_XXS, { name: 'iq3_xxs', blockSize: 256, typeSize: 98 }],
  [GgmlType.IQ1_S, { name: 'iq1_s', blockSize: 256, typeSize: 50 }],
  [GgmlType.IQ4_NL, { name: 'iq4_nl', blockSize: 32, typeSize: 18 }],
  [GgmlType.IQ3_S, { name: 'iq3_s', blockSize: 256, typeSize: 110 }],
  [GgmlType.IQ2_S, { name: 'iq2_s', blockSize: 256, typeSize: 82 }],
  [GgmlType.IQ4_XS, { name: 'iq4_xs', blockSize: 256, typeSize: 136 }],
  [GgmlType.I8, { name: 'i8', blockSize: 1, typeSize: 1 }],
  [GgmlType.I16, { name: 'i16', blockSize: 1, typeSize: 2 }],
  [GgmlType.I32, { name: 'i32', blockSize: 1, typeSize: 4 }],
  [GgmlType.I64, { name: 'i64', blockSize: 1, typeSize: 8 }],
  [GgmlType.F64, { name: 'f64', blockSize: 1, typeSize: 8 }],
  [GgmlType.IQ1_M, { name: 'iq1_m', blockSize: 256, typeSize: 56 }],
  [GgmlType.BF16, { name: 'bf16', blockSize: 1, typeSize: 2 }],
  [GgmlType.TQ1_0, { name: 'tq1_0', blockSize: 256, typeSize: 54 }],
  [GgmlType.TQ2_0, { name: 'tq2_0', blockSize: 256, typeSize: 66 }],
  [GgmlType.MXFP4, { name: 'mxfp4', blockSize: 32, typeSize: 17 }],
  [GgmlType.NVFP4, { name: 'nvfp4', blockSize: 64, typeSize: 36 }],
  [GgmlType.Q1_0, { name: 'q1_0', blockSize: 128, typeSize: 18 }],
  [GgmlType.Q2_0, { name: 'q2_0', blockSize: 64, typeSize: 18 }],
]);

/** Block layout of a ggml type, or undefined for ids this llama.cpp does not know. */
export function ggmlTypeTraits(type: number): GgmlTypeTraits | undefined {
  return TRAITS.get(type as GgmlType);
}

/** ggml's short name for a type ("q8_0"), or `type#N` for an unknown id. */
export function ggmlTypeName(type: number): string {
  return TRAITS.get(type as GgmlType)?.name ?? `type#${type}`;
}

/**
 * Bytes a tensor of this type and shape occupies (ggml_nbytes for a contiguous tensor).
 * Throws RangeError for an unknown type or a first dimension that is not a whole number of blocks.
 */
export function tensorByteSize(type: GgmlType, shape: readonly number[]): number {
  const traits = TRAITS.get(type);
  if (!traits) throw new RangeError(`unknown ggml type ${type}`);
  const ne0 = shape.length > 0 ? shape[0] : 1;
  if (ne0 % traits.blockSize !== 0) {
    throw new RangeError(`${traits.name} rows must hold a multiple of ${traits.blockSize} elements, got ${ne0}`);
  }
  let n = 1;
  for (const d of shape) n *= d;
  return (n / traits.blockSize) * traits.typeSize;
}

/** A scalar metadata value: u64/i64 come back as bigint, everything else numeric as number. */
export type GgufScalar = number | bigint | boolean | string;

/** Any metadata value; GGUF arrays hold scalars of one type and never nest (llama.cpp rejects nesting). */
export type GgufValue = GgufScalar | GgufScalar[];

/** One key/value pair of GGUF metadata. */
export interface GgufMetadataEntry {
  key: string;
  type: GgufValueType;
  value: GgufValue;
  /** Element type when `type` is ARRAY. */
  arrayType?: GgufValueType;
  /**
   * For arrays of strings: the raw bytes of each element whose decoded text holds U+FFFD
   * (invalid UTF-8 was replaced by it, or the file holds the character itself), by index.
   */
  undecodable?: ReadonlyMap<number, Buffer>;
}

/** One tensor's description from the header. */
export interface GgufTensorInfo {
  name: string;
  type: GgmlType;
  /** ggml `ne` order: shape[0] is the innermost (contiguous) dimension. */
  shape: number[];
  /** Offset of the data relative to the start of the data section. */
  offset: bigint;
  byteSize: number;
}

/** Everything in a GGUF file before the tensor data. */
export interface GgufHeader {
  version: number;
  metadata: Map<string, GgufMetadataEntry>;
  tensors: GgufTensorInfo[];
  tensorsByName: Map<string, GgufTensorInfo>;
  alignment: number;
  /** Absolute file offset of the data section. */
  dataOffset: number;
  fileSize: number;
  /** Device and inode of the file read ("dev:ino"), to tell whether a path still names it. */
  fileId?: string;
}

/** The string value of `key`, or undefined when missing or not a string. */
export function getString(h: GgufHeader, key: string): string | undefined {
  const e = h.metadata.get(key);
  return e && e.type === GgufValueType.STRING ? (e.value as string) : undefined;
}

/** The value of `key` when it is stored as uint32 exactly (llama.cpp's loaders insist on it). */
export function getU32(h: GgufHeader, key: string): number | undefined {
  const e = h.metadata.get(key);
  return e && e.type === GgufValueType.UINT32 ? (e.value as number) : undefined;
}

/** The value of `key` when it is stored as float32 exactly. */
export function getF32(h: GgufHeader, key: string): number | undefined {
  const e = h.metadata.get(key);
  return e && e.type === GgufValueType.FLOAT32 ? (e.value as number) : undefined;
}

/** The value of `key` when it is a bool. */
export function getBool(h: GgufHeader, key: string): boolean | undefined {
  const e = h.metadata.get(key);
  return e && e.type === GgufValueType.BOOL ? (e.value as boolean) : undefined;
}

/**
 * Any numeric scalar as a number, whatever its stored width; 64-bit values beyond
 * Number.MAX_SAFE_INTEGER give undefined rather than a silently rounded number.
 */
export function getNumber(h: GgufHeader, key: string): number | undefined {
  const e = h.metadata.get(key);
  if (!e) return undefined;
  if (typeof e.value === 'number') return e.value;
  if (typeof e.value === 'bigint') {
    const big = e.value;
    return big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(big) : undefined;
  }
  return undefined;
}

/** The array stored at `key`; with `elementType`, only when its elements have that type. */
export function getArray(h: GgufHeader, key: string, elementType?: GgufValueType): GgufScalar[] | undefined {
  const e = h.metadata.get(key);
  if (!e || e.type !== GgufValueType.ARRAY) return undefined;
  if (elementType !== undefined && e.arrayType !== elementType) return undefined;
  return e.value as GgufScalar[];
}
