/**
 * @internal
 * Messages between a model's own process (host.ts) and the process using it (client.ts). Every
 * request carries an id and gets one reply with that id; native objects living in the host are
 * named by ids the client chose.
 */
import type { BindingConfig, NativeGenerateOptions, NativeLoadOptions, NativeModelInfo, NativeSessionStats } from '../native/binding.js';

/** The host loads with exactly the options the binding takes in-process. */
export type LoadRequest = NativeLoadOptions;

/** A prompt part: text as the binding takes it, or an embedding held by the host. */
export type WirePromptPart = { text: string; addSpecial: boolean; plain?: number[] } | { embedding: number };

export type Request =
  | { t: 'load'; id: number; binding: BindingConfig; options: LoadRequest }
  | { t: 'rpcDevices'; id: number; binding: BindingConfig; endpoints: string[] }
  | { t: 'tokenize'; id: number; text: string; addSpecial: boolean; parseSpecial: boolean }
  | { t: 'detokenize'; id: number; tokens: Int32Array; special: boolean }
  | { t: 'encode'; id: number; embedding: number; rgb: Uint8Array; width: number; height: number }
  | { t: 'createSession'; id: number; session: number; options: { contextSize: number; batchSize?: number; threads?: number; parallel?: number } }
  | { t: 'generate'; id: number; session: number; generation: number; parts: WirePromptPart[]; options: NativeGenerateOptions }
  | { t: 'reset'; id: number; session: number }
  | { t: 'disposeSession'; id: number; session: number }
  | { t: 'disposeEmbedding'; id: number; embedding: number }
  | { t: 'trim'; id: number }
  | { t: 'dispose'; id: number };

/**
 * Fire and forget: raise the abort flag of a request, abort a generation, or let a generation's
 * host send `pieces` more pieces (it sends at most GENERATION_WINDOW pieces ahead of what the
 * client has consumed, so a slow reader holds the generation as it does in-process).
 */
export type Signal = { t: 'abortRequest'; id: number } | { t: 'abortGeneration'; generation: number } | { t: 'credit'; generation: number; pieces: number };

/** Pieces a generation's host may send ahead of the client's reading. */
export const GENERATION_WINDOW = 64;

export interface WireError {
  code: string;
  message: string;
}

/** What a generation's host pushes as its pieces come: pieces, then one end. */
export type GenerationOutput = { pieces: Array<number | string>; stats: NativeSessionStats } | { end: { stopReason: string; error?: WireError }; stats?: NativeSessionStats };

export type Reply =
  | { t: 'reply'; id: number; value?: unknown; error?: WireError }
  | { t: 'progress'; id: number; progress: number }
  | { t: 'generation'; generation: number; output: GenerationOutput };

export interface LoadReply {
  info: NativeModelInfo;
}

export interface EncodeReply {
  nTokens: number;
  nEmbd: number;
  rows: Float32Array;
}
