// The JS face of a session: generate(), stats(), reset(), dispose(). It reads and checks what
// JS sends and hands it to the session (session.h) and its generation (generation.h).
#pragma once
#include <napi.h>

#include <memory>

#include "session.h"

namespace minigpt {

class NativeSession : public Napi::ObjectWrap<NativeSession> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeSession(const Napi::CallbackInfo& info);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<ModelState> model, const SessionOptions& options);

 private:
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Reset(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<SessionState> state_;
};

}  // namespace minigpt
