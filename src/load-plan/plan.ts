/**
 * @internal
 * Everything decided about a load before native code sees a file: the headers read once,
 * every check that keeps llama.cpp from aborting on a bad file, and what the load needs to
 * know (projector kind, conversation format, image size, GPU layers). Runs in a worker thread
 * (index.ts): a large vocabulary takes tens of milliseconds to read and check.
 */
import { stat } from 'node:fs/promises';
import { defaultContextSize } from '../context-size.js';
import { ModelLoadError } from '../errors.js';
import { GgufFormatError, readGgufHeader } from '../gguf/read.js';
import { getNumber, getString, type GgufHeader } from '../gguf/types.js';
import type { NativeDevice } from '../native/binding.js';
import { checkBlip2Header } from './blip2-check.js';
import { fitGpuLayers } from './gpu-fit.js';
import { requiredFileSize } from './loaded-files-check.js';
import { checkMmprojHeader, checkTextModelHeader } from './projector-check.js';

export interface PlanInput {
  modelPath: string;
  projectorPath?: string;
  /** A layer count, or 'auto' to fit them to the devices' free memory. */
  gpuLayers: number | 'auto';
  /** Tokens of context the sessions may use in all (for 'auto'). */
  contextSize?: number;
  parallelSessions: number;
  devices: NativeDevice[];
}

/** A file as the load found it, to be looked at again once loaded (loaded-files-check.ts). */
export interface PlannedFile {
  path: string;
  what: 'Model' | 'Projector';
  code: 'ERR_MODEL_LOAD' | 'ERR_PROJECTOR_LOAD';
  /** `dev:ino` when read, so a file replaced under its name is told apart. */
  fileId?: string;
  /** Bytes up to the end of its last tensor's data. */
  requiredSize: number;
}

export interface LoadPlan {
  projectorKind: 'blip2' | 'mtmd' | undefined;
  /** `clip.projector_type`, 'blip2', or null without a projector. */
  projectorType: string | null;
  /** The conversation format a BLIP-2 projector asks for, or null. */
  promptTemplate: string | null;
  /** BLIP-2 squashes every picture to the ViT's input size first. */
  resizeTo?: number;
  hasChatTemplate: boolean;
  gpuLayers: number;
  files: PlannedFile[];
}

/** Reads a GGUF header, or rejects with a ModelLoadError that says what is wrong with the file. */
export async function checkFile(path: string, what: string, code: 'ERR_MODEL_LOAD' | 'ERR_PROJECTOR_LOAD'): Promise<GgufHeader> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new ModelLoadError(code, err.code === 'ENOENT' ? `${what} file not found: ${path}` : `Cannot read ${what} file ${path}: ${err.message}`, { cause: err });
  });
  if (info.isDirectory()) throw new ModelLoadError(code, `${what} path is a directory, not a GGUF file: ${path}`);
  try {
    return await readGgufHeader(path);
  } catch (err) {
    if (err instanceof GgufFormatError) throw new ModelLoadError(code, `${what} file ${path} is not a usable GGUF: ${err.message}`, { cause: err });
    throw new ModelLoadError(code, `Cannot read ${what} file ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads and checks a language model's header; rejects with ERR_MODEL_LOAD naming every problem. */
export async function checkTextModelFile(path: string): Promise<GgufHeader> {
  const header = await checkFile(path, 'Model', 'ERR_MODEL_LOAD');
  const problems = checkTextModelHeader(header);
  if (problems.length) throw new ModelLoadError('ERR_MODEL_LOAD', `${path}: ${problems.join('; ')}`);
  return header;
}

export async function planLoad(input: PlanInput): Promise<LoadPlan> {
  const { modelPath, projectorPath } = input;
  const header = await checkTextModelFile(modelPath);
  const arch = getString(header, 'general.architecture') ?? '';
  let projectorHeader: GgufHeader | undefined;
  if (projectorPath !== undefined) {
    projectorHeader = await checkFile(projectorPath, 'Projector', 'ERR_PROJECTOR_LOAD');
    const textEmbd = getNumber(header, `${arch}.embedding_length`);
    const problems = getString(projectorHeader, 'general.architecture') === 'blip2' ? checkBlip2Header(projectorHeader, textEmbd) : checkMmprojHeader(projectorHeader, textEmbd);
    if (problems.length) {
      const mismatch = problems.some((p) => /does not match/.test(p));
      throw new ModelLoadError(mismatch ? 'ERR_PROJECTOR_MISMATCH' : 'ERR_PROJECTOR_LOAD', `${projectorPath}: ${problems.join('; ')}`);
    }
  }
  const blip2 = projectorHeader !== undefined && getString(projectorHeader, 'general.architecture') === 'blip2';
  const gpuLayers =
    input.gpuLayers === 'auto'
      ? fitGpuLayers({
          model: header,
          projector: projectorHeader,
          contextSize: input.parallelSessions * (input.contextSize ?? defaultContextSize(getNumber(header, `${arch}.context_length`))),
          devices: input.devices,
        }).gpuLayers
      : input.gpuLayers;
  const files: PlannedFile[] = [{ path: modelPath, what: 'Model', code: 'ERR_MODEL_LOAD', fileId: header.fileId, requiredSize: requiredFileSize(header) }];
  if (projectorPath !== undefined && projectorHeader) {
    files.push({ path: projectorPath, what: 'Projector', code: 'ERR_PROJECTOR_LOAD', fileId: projectorHeader.fileId, requiredSize: requiredFileSize(projectorHeader) });
  }
  return {
    projectorKind: projectorHeader ? (blip2 ? 'blip2' : 'mtmd') : undefined,
    projectorType: blip2 ? 'blip2' : projectorHeader ? (getString(projectorHeader, 'clip.projector_type') ?? null) : null,
    promptTemplate: blip2 ? (getString(projectorHeader!, 'blip2.prompt_template') ?? null) : null,
    resizeTo: blip2 ? getNumber(projectorHeader!, 'blip2.vision.image_size') : undefined,
    hasChatTemplate: Boolean(getString(header, 'tokenizer.chat_template')),
    gpuLayers,
    files,
  };
}
