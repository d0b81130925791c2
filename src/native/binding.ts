/**
 * @internal
 * Finds, loads and types the native addon. Order: `MINIGPT_NODE_BINARY`, the local build
 * (`build/Release`), then `prebuilds/<platform>-<arch>/`. Each candidate's failure is kept so
 * the final error lists every place looked at and how to fix it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MinigptError, errorFromCode } from '../errors.js';

export interface NativeModelInfo {
  architecture?: string;
  description: string;
  parameters: number;
  sizeBytes: number;
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
  projectorBackend?: string;
  projectorEmbeddingSize?: number;
}

export interface NativeEmbedding {
  readonly nTokens: number;
  readonly nPositions: number;
  readonly nEmbd: number;
  toFloat32Array(): Float32Array;
  dispose(): void;
}

export interface NativePiece {
  token: number;
  text: string;
}

export interface NativeBatch {
  pieces: NativePiece[];
  done: boolean;
  stopReason?: 'eos' | 'maxTokens' | 'abort' | 'contextFull' | 'error';
  error?: Error;
}

export interface NativeGeneration {
  next(): Promise<NativeBatch>;
  abort(): void;
}

export type NativePromptPart = { text: string; addSpecial: boolean } | NativeEmbedding;

export interface NativeGenerateOptions {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
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
  contextSize: number;
}

export interface NativeSession {
  generate(parts: NativePromptPart[], options: NativeGenerateOptions): NativeGeneration;
  stats(): NativeSessionStats;
  reset(): void;
  dispose(): void;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Promise<Int32Array>;
  detokenize(tokens: Int32Array, special: boolean): Promise<string>;
  encodeImage(rgb: Uint8Array, width: number, height: number): Promise<NativeEmbedding>;
  createSession(options: { contextSize?: number; batchSize?: number; threads?: number }): NativeSession;
  dispose(): void;
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

export interface Binding {
  setErrorFactory(make: (code: string, message: string) => Error): void;
  loadModel(
    options: { path: string; projectorPath?: string; projectorKind: 'mtmd' | 'blip2'; threads: number; gpuLayers: number; useMmap: boolean },
    onProgress: ((p: number) => void) | undefined,
    abort: NativeAbortFlag | undefined,
  ): Promise<NativeModel>;
  systemInfo(): { llamaSystemInfo: string; hardwareConcurrency: number; devices: NativeDevice[] };
  AbortFlag: new () => NativeAbortFlag;
  llamaCommit: string;
  napiVersion: number;
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Candidate {
  file: string;
  /** An explicit path is trusted as it is; found binaries must match this package. */
  explicit: boolean;
}

function candidates(): Candidate[] {
  const list: Candidate[] = [];
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

/** The loaded addon; throws ERR_NO_BINARY listing what was tried and how to fix it. */
export function binding(): Binding {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const { file, explicit } of candidates()) {
    if (!existsSync(file)) {
      tried.push(`${file}: not found`);
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
      cached = loaded;
      return loaded;
    } catch (err) {
      tried.push(`${file}: ${(err as Error).message}`);
    }
  }
  throw new MinigptError(
    'ERR_NO_BINARY',
    `minigpt-node could not load its native addon for ${process.platform}-${process.arch} (Node ${process.versions.node}).\n` +
      tried.map((t) => `  - ${t}`).join('\n') +
      '\nFixes: run `npx minigpt build` to build it from source (needs cmake and a C++17 compiler), ' +
      'or set MINIGPT_NODE_BINARY to the path of a minigpt.node built for this platform.',
  );
}
