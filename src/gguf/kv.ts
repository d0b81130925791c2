import { GgufValueType, type GgufMetadataEntry } from './types.js';

function scalar(type: GgufValueType) {
  return (key: string, value: number | bigint | boolean | string): GgufMetadataEntry => ({ key, type, value });
}

function array<T extends number | string>(arrayType: GgufValueType) {
  return (key: string, values: readonly T[]): GgufMetadataEntry => ({ key, type: GgufValueType.ARRAY, arrayType, value: [...values] });
}

/**
 * Builders for metadata entries with the exact GGUF type llama.cpp expects
 * (its loaders reject e.g. an int32 where they want a uint32).
 *
 * @example
 * writeGguf(path, { metadata: [kv.str('general.architecture', 'llama'), kv.u32('llama.block_count', 2)], tensors })
 */
export const kv = {
  u8: scalar(GgufValueType.UINT8) as (key: string, n: number) => GgufMetadataEntry,
  i8: scalar(GgufValueType.INT8) as (key: string, n: number) => GgufMetadataEntry,
  u16: scalar(GgufValueType.UINT16) as (key: string, n: number) => GgufMetadataEntry,
  i16: scalar(GgufValueType.INT16) as (key: string, n: number) => GgufMetadataEntry,
  u32: scalar(GgufValueType.UINT32) as (key: string, n: number) => GgufMetadataEntry,
  i32: scalar(GgufValueType.INT32) as (key: string, n: number) => GgufMetadataEntry,
  f32: scalar(GgufValueType.FLOAT32) as (key: string, n: number) => GgufMetadataEntry,
  f64: scalar(GgufValueType.FLOAT64) as (key: string, n: number) => GgufMetadataEntry,
  u64: scalar(GgufValueType.UINT64) as (key: string, n: number | bigint) => GgufMetadataEntry,
  i64: scalar(GgufValueType.INT64) as (key: string, n: number | bigint) => GgufMetadataEntry,
  bool: scalar(GgufValueType.BOOL) as (key: string, b: boolean) => GgufMetadataEntry,
  str: scalar(GgufValueType.STRING) as (key: string, s: string) => GgufMetadataEntry,
  strArray: array<string>(GgufValueType.STRING),
  f32Array: array<number>(GgufValueType.FLOAT32),
  i32Array: array<number>(GgufValueType.INT32),
  u32Array: array<number>(GgufValueType.UINT32),
};
