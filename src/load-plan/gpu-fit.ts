/**
 * @internal
 * `gpuLayers: 'auto'`: how many of the LLM's layers fit in the GPUs' free memory, from the
 * GGUF headers alone (tensor sizes per layer, KV cache per layer for the context the model
 * will run with, the projector, and room for compute buffers).
 * @module
 */
import { getNumber, getString, type GgufHeader } from '../gguf/types.js';

export interface FitDevice {
  type: 'cpu' | 'gpu' | 'igpu' | 'accel';
  memoryFree: number;
}

export interface FitInput {
  model: GgufHeader;
  projector?: GgufHeader;
  /** Tokens of context each session will get (the KV cache lives beside its layer). */
  contextSize: number;
  devices: FitDevice[];
}

export interface FitResult {
  /** For llama.cpp: -1 is every layer and the output layer; 0 keeps everything on the CPU. */
  gpuLayers: number;
  /** Why, in one line (shown by model.info). */
  reason: string;
}

/** Kept free on the GPU for compute buffers, the CUDA/Metal runtime and other programs. */
const RESERVE_BYTES = 512 * 1024 * 1024;
const RESERVE_FRACTION = 0.05;

const MIB = 1024 * 1024;

export function fitGpuLayers({ model, projector, contextSize, devices }: FitInput): FitResult {
  const gpus = devices.filter((d) => d.type === 'gpu' || d.type === 'igpu');
  if (gpus.length === 0) return { gpuLayers: 0, reason: 'no GPU device' };
  const free = gpus.reduce((sum, d) => sum + d.memoryFree, 0);

  const arch = getString(model, 'general.architecture') ?? '';
  const nLayer = getNumber(model, `${arch}.block_count`) ?? 0;
  const perLayer = new Array<number>(nLayer).fill(0);
  let output = 0;
  for (const t of model.tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) {
      const i = Number(m[1]);
      if (i < nLayer) perLayer[i] += t.byteSize;
    } else if (t.name.startsWith('output')) {
      output += t.byteSize;  // output.weight and output_norm go to the GPU with the last layer
    }
  }
  // llama.cpp's default KV cache: f16 keys and values, n_head_kv * head_dim wide per layer.
  const nEmbd = getNumber(model, `${arch}.embedding_length`) ?? 0;
  const nHead = getNumber(model, `${arch}.attention.head_count`) ?? 1;
  const nHeadKv = getNumber(model, `${arch}.attention.head_count_kv`) ?? nHead;
  const keyLength = getNumber(model, `${arch}.attention.key_length`) ?? nEmbd / nHead;
  const valueLength = getNumber(model, `${arch}.attention.value_length`) ?? nEmbd / nHead;
  const kvPerLayer = contextSize * nHeadKv * (keyLength + valueLength) * 2;
  const projectorBytes = projector ? projector.tensors.reduce((sum, t) => sum + t.byteSize, 0) : 0;

  let budget = free - RESERVE_BYTES - RESERVE_FRACTION * free - projectorBytes;
  let layers = 0;
  // llama.cpp offloads the last layers first; sizes are alike, so count from the end.
  for (let i = nLayer - 1; i >= 0 && budget >= perLayer[i] + kvPerLayer; i--) {
    budget -= perLayer[i] + kvPerLayer;
    layers++;
  }
  const freeMiB = Math.round(free / MIB);
  if (layers === nLayer && budget >= output) {
    return { gpuLayers: -1, reason: `all ${nLayer} layers fit in ${freeMiB} MiB free` };
  }
  return { gpuLayers: layers, reason: `${layers} of ${nLayer} layers fit in ${freeMiB} MiB free` };
}
