// llama.cpp's own quantizer (llama_model_quantize), run on the libuv pool. It has no progress
// or cancel callback, so both ride on its log: each tensor it starts logs "[ i/ n] name ...",
// from the calling thread. A hook chained in front of our log sink reads i/n as progress and,
// when the job's abort flag is up, throws at that line: llama_model_quantize catches the
// exception (it wraps its whole work in try/catch, and everything it holds is RAII), closes
// the half-written file and returns 1. So an abort stops within one tensor.
#pragma once
#include <napi.h>

namespace minigpt {

// Chains the progress/abort hook in front of the installed log sink; once per process,
// after InstallLogSink.
void InstallQuantizeLogHook();

// quantize(input, output, ftype, threads, abort?: AbortFlag, onProgress?: (p) => void): Promise<void>
// Writes `output` directly; the caller writes to a temporary name and renames it.
Napi::Value Quantize(const Napi::CallbackInfo& info);

}  // namespace minigpt
