#include "session_binding.h"

#include <algorithm>

#include "addon.h"
#include "embedding.h"
#include "generation.h"
#include "worker.h"

namespace minigpt {

Napi::Function NativeSession::Define(Napi::Env env) {
  return DefineClass(env, "NativeSession",
                     {InstanceMethod<&NativeSession::Generate>("generate"),
                      InstanceMethod<&NativeSession::Stats>("stats"),
                      InstanceMethod<&NativeSession::Reset>("reset"),
                      InstanceMethod<&NativeSession::Dispose>("dispose")});
}

NativeSession::NativeSession(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeSession>(info) {
  if (info.Length() == 1 && info[0].IsExternal())
    state_ = std::move(*info[0].As<Napi::External<std::shared_ptr<SessionState>>>().Data());  // the External keeps nothing alive
}

namespace {

// Takes the session's sequence and creates its context on the libuv pool right away, so that
// the first prompt finds it ready (or waits only for the rest of its creation). Failures are
// left for the first generation, which tries again and reports them.
void PrepareContext(Napi::Env env, std::shared_ptr<SessionState> state) {
  TaskWorker<int>::Run(
      env,
      [state]() {
        try {
          std::shared_ptr<ContextPool> pool;
          {
            std::lock_guard<std::mutex> lock(state->mu);
            pool = state->Pool().shared_from_this();
          }
          pool->Prepare();
        } catch (...) {
        }
        return 0;
      },
      [](Napi::Env env, int&) -> Napi::Value { return env.Undefined(); });
}

}  // namespace

Napi::Object NativeSession::Wrap(Napi::Env env, std::shared_ptr<ModelState> model, const SessionOptions& options) {
  auto state = std::make_shared<SessionState>();
  state->model = std::move(model);
  state->options = options;
  PrepareContext(env, state);
  auto* holder = new std::shared_ptr<SessionState>(std::move(state));
  auto ext = Napi::External<std::shared_ptr<SessionState>>::New(
      env, holder, [](Napi::Env, std::shared_ptr<SessionState>* p) { delete p; });
  return Addon::From(env)->session_ctor.New({ext});
}

namespace {

bool ReadNumber(Napi::Object o, const char* key, double& out) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) return false;
  out = v.As<Napi::Number>().DoubleValue();
  return true;
}

// A part's `plain`: flat [start, end) pairs of UTF-8 byte offsets into its text, sorted and
// not overlapping. Returns "" or what is wrong.
std::string ReadPlainRanges(Napi::Value v, size_t text_size, std::vector<ByteRange>& out) {
  if (v.IsUndefined()) return "";
  if (!v.IsArray()) return "`plain` must be an array of byte offsets";
  Napi::Array a = v.As<Napi::Array>();
  const uint32_t n = a.Length();
  if (n % 2 != 0) return "`plain` must hold [start, end) pairs, but has " + std::to_string(n) + " numbers";
  size_t prev_end = 0;
  for (uint32_t i = 0; i < n; i += 2) {
    Napi::Value b = a.Get(i), e = a.Get(i + 1);
    if (!b.IsNumber() || !e.IsNumber()) return "`plain` must hold only numbers";
    const double db = b.As<Napi::Number>().DoubleValue(), de = e.As<Napi::Number>().DoubleValue();
    if (!(db >= 0 && de >= db && de <= double(text_size)) || db != double(size_t(db)) || de != double(size_t(de)))
      return "`plain` range " + std::to_string(i / 2) + " is not integer byte offsets start <= end within the text's " +
             std::to_string(text_size) + " bytes";
    if (size_t(db) < prev_end) return "`plain` ranges must be sorted and must not overlap";
    prev_end = size_t(de);
    out.push_back({size_t(db), size_t(de)});
  }
  return "";
}

}  // namespace

// generate(parts: Array<{ text: string, addSpecial: boolean, plain?: number[] } | NativeEmbedding>, options): NativeGeneration
Napi::Value NativeSession::Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Addon* addon = Addon::From(env);
  if (!state_) {
    addon->Throw(env, "ERR_DISPOSED", "the session has been disposed");
    return env.Undefined();
  }
  if (!info[0].IsArray() || !info[1].IsObject()) {
    addon->Throw(env, "ERR_INVALID_ARGUMENT", "Expected (parts: array, options: object)");
    return env.Undefined();
  }
  GenerationRequest req;
  Napi::Array parts = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < parts.Length(); ++i) {
    Napi::Value v = parts.Get(i);
    PromptPart part;
    if (auto image = NativeEmbedding::From(env, v)) {
      part.image = image;
    } else if (v.IsObject() && v.As<Napi::Object>().Get("text").IsString()) {
      part.text = v.As<Napi::Object>().Get("text").As<Napi::String>().Utf8Value();
      part.add_special = v.As<Napi::Object>().Get("addSpecial").ToBoolean();
      std::string bad = ReadPlainRanges(v.As<Napi::Object>().Get("plain"), part.text.size(), part.plain);
      if (!bad.empty()) {
        addon->Throw(env, "ERR_INVALID_ARGUMENT", "prompt part " + std::to_string(i) + ": " + bad);
        return env.Undefined();
      }
    } else {
      addon->Throw(env, "ERR_INVALID_ARGUMENT", "prompt part " + std::to_string(i) + " is neither text nor a live image embedding");
      return env.Undefined();
    }
    req.parts.push_back(std::move(part));
  }
  Napi::Object o = info[1].As<Napi::Object>();
  // Every option but the seed comes from src/session.ts, whose STREAM_DEFAULTS are the one
  // place for their defaults; an unset seed means a random one.
  const char* const required[] = {"maxTokens", "temperature", "topK", "topP", "minP", "repeatPenalty", "frequencyPenalty", "presencePenalty", "repeatLastN"};
  double v[9];
  for (size_t i = 0; i < 9; ++i) {
    if (!ReadNumber(o, required[i], v[i])) {
      addon->Throw(env, "ERR_INVALID_ARGUMENT", std::string("generate options need a number for ") + required[i]);
      return env.Undefined();
    }
  }
  req.max_tokens = v[0] < 0 ? 0 : v[0] > 1e9 ? 1000000000u : uint32_t(v[0]);
  req.sampling.temperature = float(v[1]);
  req.sampling.top_k = int32_t(v[2]);
  req.sampling.top_p = float(v[3]);
  req.sampling.min_p = float(v[4]);
  req.sampling.repeat_penalty = float(v[5]);
  req.sampling.frequency_penalty = float(v[6]);
  req.sampling.presence_penalty = float(v[7]);
  req.sampling.repeat_last_n = int32_t(v[8]);
  double seed;
  if (ReadNumber(o, "seed", seed)) req.sampling.seed = uint32_t(seed);
  return Generation::Start(env, state_, std::move(req));
}

Napi::Value NativeSession::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  if (!state_) return o;
  std::lock_guard<std::mutex> lock(state_->stats_mu);
  const SessionStats& s = state_->stats;
  o.Set("promptTokens", double(s.prompt_tokens));
  o.Set("reusedTokens", double(s.reused_tokens));
  o.Set("evaluatedTokens", double(s.evaluated_tokens));
  o.Set("generatedTokens", double(s.generated_tokens));
  o.Set("totalEvaluatedTokens", double(s.total_evaluated));
  o.Set("totalGeneratedTokens", double(s.total_generated));
  o.Set("contextUsed", double(state_->stats_n_past));
  return o;
}

Napi::Value NativeSession::Reset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state_) return env.Undefined();
  std::unique_lock<std::mutex> lock(state_->mu, std::try_to_lock);
  if (!lock.owns_lock()) {
    Addon::From(env)->Throw(env, "ERR_BUSY", "the session is generating; wait for the stream to end before reset()");
    return env.Undefined();
  }
  state_->Reset();
  std::lock_guard<std::mutex> stats_lock(state_->stats_mu);
  state_->stats_n_past = 0;
  return env.Undefined();
}

Napi::Value NativeSession::Dispose(const Napi::CallbackInfo& info) {
  state_.reset();
  return info.Env().Undefined();
}

}  // namespace minigpt
