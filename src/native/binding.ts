/**
 * @internal
 * Finds, loads and types the native addon. Order: `configure({ binaryPath })`, then
 * `MINIGPT_NODE_BINARY`, the local build (`build/Release`), then `prebuilds/<platform>-<arch>/`.
 * Each candidate's failure is kept so the final error lists every place looked at and how to
 * fix it. Then the optional GPU backend packages (`@minigpt-node/<platform>-<arch>-<gpu>`) and
 * any backend library named by `configure({ backends })` or `MINIGPT_BACKENDS` are registered.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MinigptError, errorFromCode } from '../errors.js';

export interface NativeModelInfo {
  architecture?: string;
  description: string;
  parameters: number;
  contextLength: number;
  embeddingSize: number;
  layers: number;
  vocabularySize: number;
  bosToken: number;
  eosToken: number;
  bosText: string | null;
  eosText: string | null;
  addBos: boolean;
  chatTemplate: string | null;
  hasVision: boolean;
}

export interface NativeEmbedding {
  readonly nTokens: number;
  readonly nEmbd: number;
  toFloat32Array(): Float32Array;
  dispose(): void;
}

/** Pieces as they left the native loop, flat: `[token, text, token, text, ...]`. */
export type NativePieces = Array<number | string>;

/** What `next()` resolves with once the loop has ended and every piece was delivered. */
export interface NativeEnd {
  done: true;
  stopReason: 'eos' | 'maxTokens' | 'abort' | 'contextFull' | 'error';
  error?: Error;
}

export interface NativeGeneration {
  /** The pieces made since the last call (waits for one), or the end. */
  next(): Promise<NativePieces | NativeEnd>;
  abort(): void;
}

/**
 * A text part is tokenized in one pass with special tokens parsed, except that a control or
 * unknown token overlapping a `plain` range stays text (user-defined tokens are split
 * everywhere, as llama.cpp does even without special parsing). `plain`: flat [start, end)
 * pairs of UTF-8 byte offsets into `text`, sorted and not overlapping.
 */
export type NativePromptPart = { text: string; addSpecial: boolean; plain?: number[] } | NativeEmbedding;

export interface NativeGenerateOptions {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  frequencyPenalty: number;
  presencePenalty: number;
  repeatLastN: number;
  seed?: number;
}

export interface NativeSessionStats {
  promptTokens: number;
  reusedTokens: number;
  evaluatedTokens: number;
  generatedTokens: number;
  totalEvaluatedTokens: number;
  totalGeneratedTokens: number;
  contextUsed: number;
}

export interface NativeSession {
  generate(parts: NativePromptPart[], options: NativeGenerateOptions): NativeGeneration;
  stats(): NativeSessionStats;
  reset(): void;
  dispose(): void;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean, abort?: NativeAbortFlag): Promise<Int32Array>;
  detokenize(tokens: Int32Array, special: boolean): Promise<string>;
  encodeImage(rgb: Uint8Array, width: number, height: number, abort?: NativeAbortFlag): Promise<NativeEmbedding>;
  createSession(options: { contextSize: number; batchSize?: number; threads?: number; parallel?: number }): NativeSession;
  /** Frees the contexts no session uses; resolves when done. */
  trimIdleContexts(): Promise<void>;
  /** Lets go of the model; its memory is freed off the JS thread (resolves when done). */
  dispose(): Promise<void>;
}

export interface NativeAbortFlag {
  abort(): void;
  readonly aborted: boolean;
}

export interface NativeDevice {
  name: string;
  description: string;
  type: 'cpu' | 'gpu' | 'igpu' | 'accel';
  memoryFree: number;
  memoryTotal: number;
}

export interface NativeCpuBackend {
  variant: string;
  library: string;
  features: Record<string, string>;
}

export interface Binding {
  setErrorFactory(make: (code: string, message: string) => Error): void;
  loadModel(
    options: { path: string; projectorPath?: string; projectorKind: 'mtmd' | 'blip2'; threads: number; gpuLayers: number; useMmap: boolean },
    onProgress: ((p: number) => void) | undefined,
    abort: NativeAbortFlag | undefined,
  ): Promise<NativeModel>;
  systemInfo(): {
    llamaSystemInfo: string;
    devices: NativeDevice[];
    cpuBackend: NativeCpuBackend;
    addonPath: string;
  };
  loadBackend(path: string): void;
  /** malloc's bytes in use (glibc only; null elsewhere): for leak checks, where RSS also counts what glibc keeps. */
  nativeHeap(): { inUse: number; mapped: number } | null;
  AbortFlag: new () => NativeAbortFlag;
  llamaCommit: string;
  napiVersion: number;
  /** llama_model_quantize on the libuv pool; ftype -1 is llama-quantize's COPY. Progress comes per tensor. */
  quantize(input: string, output: string, ftype: number, threads: number, abort: NativeAbortFlag | undefined, onProgress: ((p: number) => void) | undefined): Promise<void>;
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Candidate {
  file: string;
  /** An explicit path is trusted as it is; found binaries must match this package. */
  explicit: boolean;
}

/** Where the addon and extra backends come from; settable until the addon is loaded. */
export interface BindingConfig {
  binaryPath?: string;
  backends?: string[];
}

let config: BindingConfig = {};

export function setBindingConfig(next: BindingConfig): void {
  if (cached) {
    throw new MinigptError(
      'ERR_INVALID_ARGUMENT',
      'configure() must be called before the native addon is loaded (before the first loadModel, getSystemInfo or getDevices)',
    );
  }
  config = { ...config, ...next };
}

/** Backend libraries that could not be registered, with why; shown by getSystemInfo(). */
export const backendErrors: string[] = [];

/** The GPU backend kinds an optional per-platform package may carry. */
const GPU_PACKAGES = ['cuda', 'vulkan'] as const;

function candidates(): Candidate[] {
  const list: Candidate[] = [];
  if (config.binaryPath) list.push({ file: config.binaryPath, explicit: true });
  if (process.env.MINIGPT_NODE_BINARY) list.push({ file: process.env.MINIGPT_NODE_BINARY, explicit: true });
  list.push({ file: join(packageRoot, 'build', 'Release', 'minigpt.node'), explicit: false });
  list.push({ file: join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'minigpt.node'), explicit: false });
  return list;
}

/** Why the binary at `file` does not belong to this package, or undefined when it does. */
function mismatch(file: string): string | undefined {
  const infoPath = join(dirname(file), 'build-info.json');
  if (!existsSync(infoPath)) return 'no build-info.json beside it';
  let info: { version?: string; napiVersion?: number };
  let pkg: { version?: string };
  try {
    info = JSON.parse(readFileSync(infoPath, 'utf8'));
    pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8'));
  } catch (err) {
    return `unreadable build-info.json (${(err as Error).message})`;
  }
  if (info.version !== pkg.version) return `built for minigpt-node ${info.version}, this is ${pkg.version}`;
  const napi = Number(process.versions.napi ?? 0);
  if ((info.napiVersion ?? 0) > napi) return `needs Node-API ${info.napiVersion}, this Node has ${napi}`;
  return undefined;
}

let cached: Binding | undefined;

/**
 * GPU backends that live outside the addon's folder: an installed optional package
 * (`@minigpt-node/linux-x64-cuda` holds libggml-cuda.so and names it in its package.json), or
 * a path given by the user. A backend that cannot load (no driver, no CUDA runtime) is noted
 * and skipped: the CPU still works.
 */
function loadExtraBackends(loaded: Binding, require: NodeRequire): void {
  const files: string[] = [];
  for (const gpu of GPU_PACKAGES) {
    const name = `@minigpt-node/${process.platform}-${process.arch}-${gpu}`;
    let manifest: string;
    try {
      manifest = require.resolve(`${name}/package.json`, { paths: [packageRoot] });
    } catch {
      continue;  // not installed: the common case
    }
    try {
      const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { minigpt?: { backend?: string } };
      if (!pkg.minigpt?.backend) throw new Error('its package.json names no backend library (minigpt.backend)');
      files.push(join(dirname(manifest), pkg.minigpt.backend));
    } catch (err) {
      backendErrors.push(`${name}: ${(err as Error).message}`);
    }
  }
  const fromEnv = (process.env.MINIGPT_BACKENDS ?? '').split(delimiter).filter((p) => p.length > 0);
  files.push(...(config.backends ?? []), ...fromEnv);
  for (const file of files) {
    try {
      loaded.loadBackend(file);
    } catch (err) {
      backendErrors.push(`${file}: ${(err as Error).message}`);
    }
  }
}

/** The loaded addon; throws ERR_NO_BINARY listing what was tried and how to fix it. */
export function binding(): Binding {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const { file, explicit } of candidates()) {
    if (!existsSync(file)) {
      tried.push(`${file}: not found`);
      if (explicit) break;  // a binary the user named is the one they want: no silent fallback
      continue;
    }
    const wrong = explicit ? undefined : mismatch(file);
    if (wrong) {
      tried.push(`${file}: ${wrong}`);
      continue;
    }
    try {
      const loaded = require(file) as Binding;
      loaded.setErrorFactory((code, message) => errorFromCode(code, message));
      if (!loaded.systemInfo().devices.some((d) => d.type === 'cpu')) {
        // A prebuild whose folder lost its libggml-cpu-* files loads but could run nothing.
        tried.push(`${file}: loaded, but no CPU backend library (ggml-cpu-*) was found beside it; the folder is incomplete`);
        if (explicit) break;
        continue;
      }
      cached = loaded;
      loadExtraBackends(loaded, require);
      return loaded;
    } catch (err) {
      tried.push(`${file}: ${(err as Error).message}`);
    }
    if (explicit) break;
  }
  const named = candidates().find((c) => c.explicit);
  throw new MinigptError(
    'ERR_NO_BINARY',
    `minigpt-node could not load its native addon for ${process.platform}-${process.arch} (Node ${process.versions.node}).\n` +
      tried.map((t) => `  - ${t}`).join('\n') +
      (named
        ? `\nThe binary named by ${config.binaryPath ? 'configure({ binaryPath })' : 'MINIGPT_NODE_BINARY'} is used or nothing is: fix that path, or unset it to use the package's own build.`
        : '') +
      '\nFixes: run `npx minigpt build` to build it from source (needs cmake and a C++17 compiler), ' +
      'or set MINIGPT_NODE_BINARY (or configure({ binaryPath })) to the path of a minigpt.node built for this platform.',
  );
}
