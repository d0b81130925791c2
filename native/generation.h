// The decode-sample loop of one request, on a thread of its own (a long generation must not
// pin a libuv pool thread). Tokens go into a bounded queue that JS drains with next(); when
// JS falls `queue_size` tokens behind the loop waits, and abort() stops it within one token.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sampler.h"
#include "session.h"

namespace minigpt {

struct GenerationRequest {
  std::vector<PromptPart> parts;
  SamplingOptions sampling;
  uint32_t max_tokens = 0;  // always given (session_binding.cpp)
  size_t queue_size = 64;
};

struct Piece {
  llama_token token;
  std::string text;  // whole UTF-8 characters only; "" while a character is still incomplete
};

// Shared by the loop thread and the JS wrapper.
class Generation;

struct GenerationCore {
  std::shared_ptr<SessionState> session;
  GenerationRequest request;
  std::atomic<bool> abort{false};

  std::mutex mu;
  std::condition_variable space;  // the loop waits here for JS to drain
  std::deque<Piece> queue;
  bool finished = false;
  std::string stop_reason;  // "eos" | "maxTokens" | "abort" | "contextFull"
  std::string error_code, error_message;

  std::thread thread;
  Napi::ThreadSafeFunction notify;  // wakes the JS side after a push or at the end
  Generation* owner = nullptr;      // referenced (Ref) until `notify` is finalized

  void Wake();

  bool torn_down = false;  // the environment is exiting: JS can no longer be called

  void Run();
  // Raises abort and wakes a loop waiting for JS to drain. Any thread.
  void RaiseAbort();
  // Raises abort and joins the loop thread. JS thread only.
  void Stop();
  void Push(Piece piece);
  void Finish(std::string reason, std::string code = {}, std::string message = {});
  // Unlocks and drops the session, then Finish.
  void Conclude(std::unique_lock<std::mutex>& session_lock, std::string reason, std::string code = {}, std::string message = {});
};

class Generation : public Napi::ObjectWrap<Generation> {
 public:
  // JS thread: resolves the pending next() if anything is ready.
  void Deliver(Napi::Env env);
  static Napi::Function Define(Napi::Env env);
  explicit Generation(const Napi::CallbackInfo& info);
  ~Generation();
  static Napi::Value Start(Napi::Env env, std::shared_ptr<SessionState> session, GenerationRequest request);

 private:
  Napi::Value Next(const Napi::CallbackInfo& info);
  Napi::Value Abort(const Napi::CallbackInfo& info);

  std::shared_ptr<GenerationCore> core_;
  std::optional<Napi::Promise::Deferred> pending_;
  // Environment teardown (worker exit, Electron reload) stops a loop still running.
  std::optional<Napi::Env::CleanupHook<void (*)(GenerationCore*), GenerationCore>> cleanup_;
};

}  // namespace minigpt
