// The loaded LLM and its optional projector. ModelState is shared (shared_ptr) by the JS
// wrapper, its sessions, its embeddings and in-flight workers, so native memory is freed
// only when the last of them lets go, whatever order JS disposes them in.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "compute_turns.h"
#include "handles.h"
#include "projector.h"
#include "tokenizer.h"

namespace minigpt {

class ContextPools;

struct ModelState {
  std::shared_ptr<llama_model> model;  // shared with the projector, which keeps a pointer to it
  const llama_vocab* vocab = nullptr;
  std::shared_ptr<const Tokenizer> tokenizer;  // for `vocab`
  std::shared_ptr<Projector> projector;
  int threads = 4;
  std::string path;
  std::string projector_path;
  std::shared_ptr<ContextPools> pools;  // the sessions' contexts, shared in groups of `parallel`
  std::shared_ptr<ComputeTurns> turns;  // one computation at a time: decode steps, prompts, image encodes
};

// A token's text; thread-safe (the vocabulary is read-only). Text to tokens: ModelState::tokenizer.
std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special);

struct LoadOptions {
  std::string path;
  std::string projector_path;  // empty: none
  std::string projector_kind = "mtmd";  // "mtmd" (libmtmd's mmproj) or "blip2" (ours)
  int threads = 4;
  int gpu_layers = 0;
  bool use_mmap = true;
  std::vector<std::string> rpc_servers;  // host:port of each, already probed (src/rpc/probe.ts)
  std::vector<float> tensor_split;       // per device (remote first, then local GPUs); empty: by free memory
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeModel(const Napi::CallbackInfo& info);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<ModelState> state);

  // Runs on a worker thread. Throws NativeError (ERR_MODEL_LOAD, ERR_PROJECTOR_LOAD, ERR_ABORTED).
  static std::shared_ptr<ModelState> Load(const LoadOptions& options, const std::atomic<bool>* abort,
                                          const std::function<void(float)>& progress);

  // Throws ERR_DISPOSED as a JS exception and returns nullptr when disposed.
  std::shared_ptr<ModelState> State(Napi::Env env);

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value TokenizeAsync(const Napi::CallbackInfo& info);
  Napi::Value DetokenizeAsync(const Napi::CallbackInfo& info);
  Napi::Value EncodeImage(const Napi::CallbackInfo& info);
  Napi::Value CreateSession(const Napi::CallbackInfo& info);
  // Frees the contexts no session uses (kept for the next session); resolves when done.
  Napi::Value TrimIdleContexts(const Napi::CallbackInfo& info);
  // Lets go of the model; its memory is freed off the JS thread once nothing else holds it.
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<ModelState> state_;
};

}  // namespace minigpt
