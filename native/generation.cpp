#include "generation.h"

#include <algorithm>
#include <utility>

#include "addon.h"
#include "errors.h"
#include "log.h"

namespace minigpt {
namespace {

// Length of the longest prefix of `s` that ends on a whole UTF-8 character. Bytes that can
// never start a character are counted as complete so a bad byte cannot stall the stream.
size_t CompleteUtf8Prefix(const std::string& s) {
  size_t n = s.size();
  size_t i = n;
  for (size_t back = 0; back < 4 && i > 0; ++back) {
    unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII)
      size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
      return (n - (i - 1) >= need) ? n : i - 1;
    }
    --i;
  }
  return n;
}

}  // namespace

void GenerationCore::Push(Piece piece) {
  bool was_empty;
  {
    std::unique_lock<std::mutex> lock(mu);
    space.wait(lock, [&] { return queue.size() < request.queue_size || abort.load(); });
    was_empty = queue.empty();
    queue.push_back(std::move(piece));
  }
  if (was_empty) Wake();  // JS drains everything queued in one go
}

void GenerationCore::Wake() {
  Generation* target = owner;
  notify.NonBlockingCall([target](Napi::Env env, Napi::Function) { target->Deliver(env); });
}

void GenerationCore::Finish(std::string reason, std::string code, std::string message) {
  {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
    stop_reason = std::move(reason);
    error_code = std::move(code);
    error_message = std::move(message);
  }
  Wake();
  notify.Release();
}

void GenerationCore::Conclude(std::unique_lock<std::mutex>& session_lock, std::string reason, std::string code, std::string message) {
  session_lock.unlock();
  // Before JS hears of the end: a model disposed right after must not be kept by this request.
  session.reset();
  request.parts.clear();
  Finish(std::move(reason), std::move(code), std::move(message));
}

void GenerationCore::Run() {
  SessionState& s = *session;
  std::unique_lock<std::mutex> session_lock(s.mu);
  LogErrorScope log;
  try {
    const llama_vocab* vocab = s.model->vocab;
    TokenSampler sampler(request.sampling, vocab);
    llama_token token = s.EvaluatePrompt(request.parts, request.max_tokens > 0 ? &sampler : nullptr, abort, log);

    std::string pending;  // bytes of a character not yet complete
    // The last token's piece while `pending` holds its unfinished character: it is sent once the
    // character completes, or at the end with U+FFFD in place of the incomplete bytes, so every
    // piece carries the id of a token the model produced.
    std::optional<Piece> held;
    // The first piece goes out when the first decode step joins a batch: requests that arrive
    // together have their prompts evaluated before any decode batch, so an answer whose first
    // token came early would then pause inside the answer for the others' prompts. Held, the
    // wait shows once, before the first token, and the answer then flows at one token per batch
    // (what llama-server's loop gives too). A lone session's batch starts at once.
    std::optional<Piece> first;
    const auto release_first = [&] {
      if (first) Push(std::move(*std::exchange(first, std::nullopt)));
    };
    uint32_t generated = 0;
    std::string reason;
    {
      // Ends before Conclude, which may drop the last owner of the session and its pool.
      SessionState::Answer answer(s, sampler, abort, log);
      for (;;) {
        if (abort.load()) { reason = "abort"; break; }
        if (generated >= request.max_tokens) { reason = "maxTokens"; break; }
        if (llama_vocab_is_eog(vocab, token)) { reason = "eos"; break; }
        ++generated;
        pending += TokenPiece(vocab, token, false);
        size_t whole = CompleteUtf8Prefix(pending);
        if (held) Push(std::move(*std::exchange(held, std::nullopt)));
        Piece piece{token, pending.substr(0, whole)};
        pending.erase(0, whole);
        if (!pending.empty()) held = std::move(piece);
        else if (generated == 1) first = std::move(piece);
        else Push(std::move(piece));
        answer.CountGenerated(generated);
        if (generated >= request.max_tokens) { reason = "maxTokens"; break; }
        if (answer.ContextFull()) { reason = "contextFull"; break; }
        std::optional<llama_token> next = answer.Step(token, release_first);  // released inside, always
        if (!next) { reason = "abort"; break; }
        token = *next;
      }
    }
    release_first();  // the answer ended before its first step
    if (held) {
      held->text += "\xEF\xBF\xBD";  // U+FFFD for the bytes of a character the stream ended inside
      Push(std::move(*held));
    }
    Conclude(session_lock, reason);
    return;
  } catch (const EvaluationAborted&) {
    s.RestoreAfterFailure();  // drop the partly evaluated batch so the sequence matches `history` again
    Conclude(session_lock, "abort");
    return;
  } catch (const NativeError& e) {
    s.RestoreAfterFailure();
    Conclude(session_lock, "error", e.code(), e.what());
  } catch (const std::exception& e) {
    s.Reset();
    Conclude(session_lock, "error", "ERR_NATIVE", e.what());
  } catch (...) {
    s.Reset();
    Conclude(session_lock, "error", "ERR_NATIVE", "unknown C++ exception");
  }
}

Napi::Function Generation::Define(Napi::Env env) {
  return DefineClass(env, "NativeGeneration",
                     {InstanceMethod<&Generation::Next>("next"), InstanceMethod<&Generation::Abort>("abort")});
}

Generation::Generation(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Generation>(info) {}

Generation::~Generation() {
  if (core_) core_->Stop();
}

void GenerationCore::RaiseAbort() {
  {
    // Under the lock: a loop that has just found the queue full, and not yet begun to wait, must
    // not miss this (it would then wait for JS to drain forever: seen as a worker's termination
    // hanging in Stop()'s join).
    std::lock_guard<std::mutex> lock(mu);
    abort.store(true);
  }
  space.notify_all();
}

void GenerationCore::Stop() {
  RaiseAbort();
  if (thread.joinable()) thread.join();
}

Napi::Value Generation::Start(Napi::Env env, std::shared_ptr<SessionState> session, GenerationRequest request) {
  Addon* addon = Addon::From(env);
  Napi::Object obj = addon->generation_ctor.New({});
  Generation* gen = Unwrap(obj);
  auto core = std::make_shared<GenerationCore>();
  core->session = std::move(session);
  core->request = std::move(request);
  gen->core_ = core;
  core->owner = gen;
  gen->Ref();  // alive until the loop has finished and told us so
  core->notify = Napi::ThreadSafeFunction::New(
      env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "minigpt-generation", 0, 1,
      [gen](Napi::Env env) {  // JS thread, after the loop's Release()
        GenerationCore* c = gen->core_.get();
        if (c->thread.joinable()) c->thread.join();
        if (c->torn_down) return;  // the hook below already ran; JS objects are going away
        if (gen->cleanup_) gen->cleanup_->Remove(env);
        gen->cleanup_.reset();
        gen->Deliver(env);
        gen->Unref();
      });
  gen->cleanup_.emplace(env.AddCleanupHook(
      +[](GenerationCore* c) {
        c->torn_down = true;
        c->Stop();
      },
      core.get()));
  core->thread = std::thread([core] { core->Run(); });
  return obj;
}

void Generation::Deliver(Napi::Env env) {
  if (!pending_) return;
  Napi::HandleScope scope(env);
  std::deque<Piece> pieces;
  std::string reason, code, message;
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    if (core_->queue.empty() && !core_->finished) return;
    pieces.swap(core_->queue);
    reason = core_->stop_reason;
    code = core_->error_code;
    message = core_->error_message;
  }
  core_->space.notify_all();
  Napi::Value result;
  if (!pieces.empty()) {
    // One flat array, [token, text, token, text, ...]: elements set by index cost V8 a fraction
    // of what objects with named properties do, and this runs on every token while the compute
    // threads want every core (docs/benchmarks.md, Notes).
    Napi::Array flat = Napi::Array::New(env, pieces.size() * 2);
    uint32_t i = 0;
    for (const Piece& p : pieces) {
      flat.Set(i++, Napi::Number::New(env, p.token));
      flat.Set(i++, Napi::String::New(env, p.text));
    }
    result = flat;
  } else {  // finished, everything delivered: once per stream
    Napi::Object end = Napi::Object::New(env);
    end.Set("done", true);
    end.Set("stopReason", reason);
    if (!code.empty()) end.Set("error", Addon::From(env)->MakeError(env, code, message));
    result = end;
  }
  auto deferred = std::move(*pending_);
  pending_.reset();
  deferred.Resolve(result);
}

// next(): Promise<[token, text, ...] | { done: true, stopReason: string, error?: Error }>
Napi::Value Generation::Next(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (pending_) {
    Addon::From(env)->Throw(env, "ERR_BUSY", "next() called again before the previous call settled");
    return env.Undefined();
  }
  pending_.emplace(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = pending_->Promise();
  Deliver(env);
  return promise;
}

Napi::Value Generation::Abort(const Napi::CallbackInfo& info) {
  if (core_) core_->RaiseAbort();
  return info.Env().Undefined();
}

}  // namespace minigpt
