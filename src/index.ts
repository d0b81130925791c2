/**
 * minigpt-node: vision-language models (MiniGPT-4, LLaVA and every projector llama.cpp's
 * libmtmd loads) from Node.js, on the user's own machine.
 * @packageDocumentation
 */
export { loadModel, Model } from './model.js';
export type { LoadModelOptions, ModelInfo, TokenizeOptions, DetokenizeOptions } from './model.js';
export { Session } from './session.js';
export type { SessionOptions, StreamOptions, SessionStats, StreamResult, FinishReason, Content, ContentPart, Piece, ChatMessage } from './session.js';
export { ImageEmbedding } from './embedding.js';
export { decodeImage } from './image.js';
export type { ImageInput, RawImage, RgbImage, DecodeOptions } from './image.js';
export {
  MinigptError,
  InvalidArgumentError,
  ModelLoadError,
  ImageError,
  ContextOverflowError,
  AbortedError,
  DisposedError,
  DownloadError,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export { configure, getDevices, getSystemInfo } from './system.js';
export { getRpcDevices } from './rpc/index.js';
export type { ConfigureOptions, SystemInfo } from './system.js';
export type { NativeDevice as Device, NativeCpuBackend as CpuBackend } from './native/binding.js';
export { convertBlip2 } from './convert/blip2.js';
export type { ConvertBlip2Options, ConvertBlip2Result } from './convert/blip2.js';
export { convertLlama } from './convert/llama.js';
export type { ConvertLlamaOptions, ConvertLlamaResult, LlamaOutType } from './convert/llama.js';
export { quantize, QUANTIZE_TYPES } from './quantize.js';
export type { QuantizeOptions, QuantizeResult, QuantizeType } from './quantize.js';
export { convertGgml } from './convert/ggml.js';
export type { ConvertGgmlOptions, ConvertGgmlResult } from './convert/ggml.js';
export { modelsDir, planModel, pullModel, listModels, removeModel } from './models/index.js';
export type { ModelFile, ResolvedModel, DownloadProgress, PullOptions, CatalogEntry, CatalogFile, RecipeOptions, RecipeStep, RecipeStepEvent } from './models/index.js';
export { createServer, MinigptServer } from './server/index.js';
export type { ServerOptions, CloseOptions } from './server/index.js';
export type { Blip2PromptTemplate, Blip2Hparams } from './convert/blip2-hparams.js';
export type { Blip2FileType } from './convert/blip2-tensors.js';
export type { Recipe, RecipeFile } from './models/recipe-spec.js';
export type { LoadDownloadOption } from './models/index.js';
