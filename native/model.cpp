#include "model.h"

#include <algorithm>
#include <functional>

#include "abort_flag.h"
#include "addon.h"
#include "embedding.h"
#include "errors.h"
#include "log.h"
#include "mtmd_projector.h"
#include "rpc.h"
#include "qformer/blip2_projector.h"
#include "session_binding.h"
#include "worker.h"

namespace minigpt {

std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special) {
  char small[64];
  int32_t n = llama_token_to_piece(vocab, token, small, sizeof small, 0, special);
  if (n >= 0) return std::string(small, size_t(n));
  std::string big(size_t(-n), '\0');
  n = llama_token_to_piece(vocab, token, big.data(), int32_t(big.size()), 0, special);
  big.resize(size_t(std::max(n, 0)));
  return big;
}

namespace {

// llama_tokenize asserts, ending the process, when the vocabulary says to add a BOS, EOS or
// separator it does not have (WordPiece always adds both); every prompt starts with add_special.
std::string MissingAddedToken(const llama_vocab* vocab) {
  const bool wpm = llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_WPM;
  if ((wpm || llama_vocab_get_add_bos(vocab)) && llama_vocab_bos(vocab) == LLAMA_TOKEN_NULL) return "BOS";
  if (llama_vocab_get_add_eos(vocab) && llama_vocab_eos(vocab) == LLAMA_TOKEN_NULL) return "EOS";
  if (wpm && llama_vocab_sep(vocab) == LLAMA_TOKEN_NULL) return "separator (SEP)";
  return {};
}

struct ProgressRelay {
  const std::atomic<bool>* abort;
  std::function<void(float)> report;
  float lo, hi;
};

bool OnLoadProgress(float p, void* data) {
  auto* relay = static_cast<ProgressRelay*>(data);
  if (relay->report) relay->report(relay->lo + (relay->hi - relay->lo) * p);
  return !(relay->abort && relay->abort->load());
}

}  // namespace

std::shared_ptr<ModelState> NativeModel::Load(const LoadOptions& options, const std::atomic<bool>* abort,
                                              const std::function<void(float)>& progress) {
  LogErrorScope log;
  auto state = std::make_shared<ModelState>();
  state->turns = std::make_shared<ComputeTurns>();
  state->pools = std::make_shared<ContextPools>(state->turns);
  state->threads = options.threads;
  state->path = options.path;
  state->projector_path = options.projector_path;

  const float model_share = options.projector_path.empty() ? 1.0f : 0.85f;
  ProgressRelay relay{abort, progress, 0.0f, model_share};
  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = options.gpu_layers;
  params.progress_callback = OnLoadProgress;  // also silences llama.cpp's progress dots
  params.progress_callback_user_data = &relay;
  if (!options.use_mmap) params.load_mode = LLAMA_LOAD_MODE_NONE;
  // With RPC servers the devices are named: the servers' (first, as llama.cpp orders them, so
  // that fewer activations cross the network), then this machine's GPUs.
  std::vector<ggml_backend_dev_t> devices;
  std::vector<float> split;
  if (!options.rpc_servers.empty()) {
    devices = RpcDevices(options.rpc_servers);
    bool gpu = false;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
      ggml_backend_dev_t dev = ggml_backend_dev_get(i);
      if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU) gpu = true;
    }
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
      ggml_backend_dev_t dev = ggml_backend_dev_get(i);
      const auto type = ggml_backend_dev_type(dev);
      if (type == GGML_BACKEND_DEVICE_TYPE_GPU || (!gpu && type == GGML_BACKEND_DEVICE_TYPE_IGPU)) devices.push_back(dev);
    }
    devices.push_back(nullptr);
    params.devices = devices.data();
  }
  if (!options.tensor_split.empty()) {
    const size_t n_devices = devices.empty() ? 0 : devices.size() - 1;
    if (options.tensor_split.size() != n_devices)
      throw NativeError("ERR_INVALID_ARGUMENT", "tensorSplit has " + std::to_string(options.tensor_split.size()) + " shares but the model is split over " +
                                                    std::to_string(n_devices) + " devices (the RPC servers' devices, then this machine's GPUs)");
    split = options.tensor_split;
    split.resize(std::max(split.size(), llama_max_devices()), 0.0f);
    params.tensor_split = split.data();
  }
  state->model.reset(llama_model_load_from_file(options.path.c_str(), params), LlamaModelFree());
  if (abort && abort->load()) throw NativeError("ERR_ABORTED", "model load aborted");
  if (!state->model) throw NativeError("ERR_MODEL_LOAD", "llama.cpp could not load the model " + options.path + log.Suffix());
  state->vocab = llama_model_get_vocab(state->model.get());
  if (std::string missing = MissingAddedToken(state->vocab); !missing.empty())
    throw NativeError("ERR_MODEL_LOAD", "the vocabulary of " + options.path + " asks for a " + missing +
                                            " token before or after every text but has none (its id is out of range or unset); fix the tokenizer.ggml.* keys");
  state->tokenizer = std::make_shared<const Tokenizer>(state->vocab);

  if (!options.projector_path.empty() && options.projector_kind == "blip2") {
    Blip2Options bopts;
    bopts.threads = options.threads;
    bopts.use_mmap = options.use_mmap;
    bopts.use_gpu = options.gpu_layers != 0;  // the projector follows the LLM onto the GPU
    state->projector = LoadBlip2Projector(options.projector_path, state->model, bopts);
  } else if (!options.projector_path.empty()) {
    MtmdOptions mopts;
    mopts.threads = options.threads;
    mopts.use_gpu = options.gpu_layers != 0;
    mopts.abort = abort;
    state->projector = LoadMtmdProjector(options.projector_path, state->model, mopts);
  }
  if (progress) progress(1.0f);
  return state;
}

Napi::Function NativeModel::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {InstanceMethod<&NativeModel::Info>("info"),
                      InstanceMethod<&NativeModel::TokenizeAsync>("tokenize"),
                      InstanceMethod<&NativeModel::DetokenizeAsync>("detokenize"),
                      InstanceMethod<&NativeModel::EncodeImage>("encodeImage"),
                      InstanceMethod<&NativeModel::CreateSession>("createSession"),
                      InstanceMethod<&NativeModel::TrimIdleContexts>("trimIdleContexts"),
                      InstanceMethod<&NativeModel::Dispose>("dispose")});
}

NativeModel::NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
  if (info.Length() == 1 && info[0].IsExternal()) {
    state_ = std::move(*info[0].As<Napi::External<std::shared_ptr<ModelState>>>().Data());  // the External keeps nothing alive
  }
}

Napi::Object NativeModel::Wrap(Napi::Env env, std::shared_ptr<ModelState> state) {
  auto* holder = new std::shared_ptr<ModelState>(std::move(state));
  auto ext = Napi::External<std::shared_ptr<ModelState>>::New(env, holder, [](Napi::Env, std::shared_ptr<ModelState>* p) { delete p; });
  return Addon::From(env)->model_ctor.New({ext});
}

std::shared_ptr<ModelState> NativeModel::State(Napi::Env env) {
  if (!state_) Addon::From(env)->Throw(env, "ERR_DISPOSED", "the model has been disposed");
  return state_;
}

Napi::Value NativeModel::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = State(env);
  if (!state) return env.Undefined();
  const llama_model* m = state->model.get();
  Napi::Object o = Napi::Object::New(env);
  char buf[256];
  if (llama_model_meta_val_str(m, "general.architecture", buf, sizeof buf) >= 0) o.Set("architecture", buf);
  llama_model_desc(m, buf, sizeof buf);
  o.Set("description", buf);
  o.Set("parameters", Napi::Number::New(env, double(llama_model_n_params(m))));
  o.Set("contextLength", llama_model_n_ctx_train(m));
  o.Set("embeddingSize", llama_model_n_embd(m));
  o.Set("layers", llama_model_n_layer(m));
  o.Set("vocabularySize", llama_vocab_n_tokens(state->vocab));
  o.Set("bosToken", llama_vocab_bos(state->vocab));
  o.Set("eosToken", llama_vocab_eos(state->vocab));
  o.Set("addBos", llama_vocab_get_add_bos(state->vocab));
  const char* tmpl = llama_model_chat_template(m, nullptr);
  o.Set("chatTemplate", tmpl ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
  o.Set("hasVision", state->projector != nullptr);
  auto piece = [&](llama_token t) -> Napi::Value {
    if (t < 0 || t >= llama_vocab_n_tokens(state->vocab)) return env.Null();
    return Napi::String::New(env, llama_vocab_get_text(state->vocab, t));
  };
  o.Set("bosText", piece(llama_vocab_bos(state->vocab)));
  o.Set("eosText", piece(llama_vocab_eos(state->vocab)));
  return o;
}

// tokenize(text: string, addSpecial: boolean, parseSpecial: boolean, abort?: AbortFlag): Promise<Int32Array>
Napi::Value NativeModel::TokenizeAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = State(env);
  if (!state) return env.Undefined();
  if (!info[0].IsString()) {
    Addon::From(env)->Throw(env, "ERR_INVALID_ARGUMENT", "Expected string for text");
    return env.Undefined();
  }
  std::string text = info[0].As<Napi::String>().Utf8Value();
  bool add_special = info[1].ToBoolean();
  bool parse_special = info[2].ToBoolean();
  AbortState abort = AbortFlag::From(env, info[3]);
  return TaskWorker<std::vector<llama_token>>::Run(
      env,
      [state, text = std::move(text), add_special, parse_special, abort] {
        return state->tokenizer->Tokenize(text, add_special, parse_special, {}, abort.get());
      },
      [](Napi::Env env, std::vector<llama_token>& tokens) -> Napi::Value {
        auto arr = Napi::Int32Array::New(env, tokens.size());
        std::copy(tokens.begin(), tokens.end(), arr.Data());
        return arr;
      });
}

// detokenize(tokens: Int32Array, special: boolean): Promise<string>
Napi::Value NativeModel::DetokenizeAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = State(env);
  if (!state) return env.Undefined();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    Addon::From(env)->Throw(env, "ERR_INVALID_ARGUMENT", "Expected Int32Array for tokens");
    return env.Undefined();
  }
  auto arr = info[0].As<Napi::Int32Array>();
  std::vector<llama_token> tokens(arr.Data(), arr.Data() + arr.ElementLength());
  bool special = info[1].ToBoolean();
  const int32_t n_vocab = llama_vocab_n_tokens(state->vocab);
  for (llama_token t : tokens) {
    if (t < 0 || t >= n_vocab) {
      Addon::From(env)->Throw(env, "ERR_INVALID_ARGUMENT", "token id " + std::to_string(t) + " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
      return env.Undefined();
    }
  }
  return TaskWorker<std::string>::Run(
      env,
      [state, tokens, special] {
        std::string out(tokens.size() * 8 + 16, '\0');
        int32_t n = llama_detokenize(state->vocab, tokens.data(), int32_t(tokens.size()), out.data(), int32_t(out.size()), false, special);
        if (n < 0) {
          out.resize(size_t(-n));
          n = llama_detokenize(state->vocab, tokens.data(), int32_t(tokens.size()), out.data(), int32_t(out.size()), false, special);
        }
        out.resize(size_t(std::max(n, 0)));
        return out;
      },
      [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::String::New(env, s); });
}

// encodeImage(rgb: Uint8Array, width: number, height: number, abort?: AbortFlag): Promise<NativeEmbedding>
Napi::Value NativeModel::EncodeImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Addon* addon = Addon::From(env);
  auto state = State(env);
  if (!state) return env.Undefined();
  if (!state->projector) {
    addon->Throw(env, "ERR_NO_PROJECTOR", "this model was loaded without a projector; pass `projector` to loadModel() to use images");
    return env.Undefined();
  }
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      !info[1].IsNumber() || !info[2].IsNumber()) {
    addon->Throw(env, "ERR_INVALID_ARGUMENT", "Expected (Uint8Array, width, height)");
    return env.Undefined();
  }
  auto rgb = info[0].As<Napi::Uint8Array>();
  int64_t w = info[1].As<Napi::Number>().Int64Value(), h = info[2].As<Napi::Number>().Int64Value();
  if (w <= 0 || h <= 0 || w > INT32_MAX || h > INT32_MAX || size_t(rgb.ElementLength()) != size_t(w) * size_t(h) * 3) {
    addon->Throw(env, "ERR_INVALID_ARGUMENT", "RGB buffer of " + std::to_string(rgb.ElementLength()) + " bytes does not hold " + std::to_string(w) + "x" + std::to_string(h) + "x3 pixels");
    return env.Undefined();
  }
  // libmtmd's preprocessing multiplies width, height and channels in int: past this they overflow.
  if (rgb.ElementLength() > size_t(INT32_MAX)) {
    addon->Throw(env, "ERR_IMAGE_DECODE", "the image is " + std::to_string(w) + "x" + std::to_string(h) + " (" + std::to_string(w * h) +
                                             " pixels); the projector takes at most " + std::to_string(INT32_MAX / 3) + " pixels: scale it down first");
    return env.Undefined();
  }
  auto pixels = std::make_shared<std::vector<uint8_t>>(rgb.Data(), rgb.Data() + rgb.ElementLength());
  auto projector = state->projector;
  AbortState abort = AbortFlag::From(env, info[3]);
  return TaskWorker<std::shared_ptr<const EncodedImage>>::Run(
      env,
      [projector, turns = state->turns, pixels, w, h, abort] {
        ComputeTurns::Turn turn(*turns);
        return projector->Encode(pixels->data(), uint32_t(w), uint32_t(h), abort.get());
      },
      [](Napi::Env env, std::shared_ptr<const EncodedImage>& image) -> Napi::Value {
        return NativeEmbedding::Wrap(env, image);
      });
}

// createSession({ contextSize, batchSize, threads, parallel }): NativeSession (its context is made lazily, off the JS thread)
Napi::Value NativeModel::CreateSession(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = State(env);
  if (!state) return env.Undefined();
  SessionOptions opts;
  // The context size has one default, src/context-size.ts's; this binding takes sizes only.
  if (!info[0].IsObject() || !info[0].As<Napi::Object>().Get("contextSize").IsNumber() ||
      info[0].As<Napi::Object>().Get("contextSize").As<Napi::Number>().Uint32Value() == 0) {
    Addon::From(env)->Throw(env, "ERR_INVALID_ARGUMENT", "createSession needs { contextSize: tokens >= 1 }");
    return env.Undefined();
  }
  {
    Napi::Object o = info[0].As<Napi::Object>();
    opts.context_size = o.Get("contextSize").As<Napi::Number>().Uint32Value();
    if (o.Get("batchSize").IsNumber()) opts.batch_size = o.Get("batchSize").As<Napi::Number>().Uint32Value();
    if (o.Get("threads").IsNumber()) opts.threads = o.Get("threads").As<Napi::Number>().Int32Value();
    if (o.Get("parallel").IsNumber()) opts.parallel = std::max<uint32_t>(1, o.Get("parallel").As<Napi::Number>().Uint32Value());
  }
  if (opts.threads <= 0) opts.threads = state->threads;
  return NativeSession::Wrap(env, state, opts);
}

namespace {

// Frees what `owned` holds on the libuv pool: unmapping weights and freeing a context take tens
// of milliseconds, too long for the JS thread. Resolves when done.
template <typename T>
Napi::Promise ReleaseOffThread(Napi::Env env, T owned) {
  auto holder = std::make_shared<T>(std::move(owned));
  return TaskWorker<int>::Run(
      env,
      [holder]() {
        *holder = T();  // the last reference, unless something still uses it (then it goes with that)
        return 0;
      },
      [](Napi::Env env, int&) -> Napi::Value { return env.Undefined(); });
}

Napi::Promise Resolved(Napi::Env env) {
  auto done = Napi::Promise::Deferred::New(env);
  done.Resolve(env.Undefined());
  return done.Promise();
}

}  // namespace

Napi::Value NativeModel::TrimIdleContexts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state_) return Resolved(env);
  return ReleaseOffThread(env, state_->pools->TrimIdle(0));
}

Napi::Value NativeModel::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ModelState> state = std::move(state_);
  state_.reset();
  if (!state) return Resolved(env);
  return ReleaseOffThread(env, std::move(state));
}

}  // namespace minigpt
