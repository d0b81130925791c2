// A cancellation flag JS can raise (from an AbortSignal listener) while native work runs
// on another thread; the work polls it through llama/mtmd progress and abort callbacks.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>

namespace minigpt {

using AbortState = std::shared_ptr<std::atomic<bool>>;

class AbortFlag : public Napi::ObjectWrap<AbortFlag> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit AbortFlag(const Napi::CallbackInfo& info);
  // The state behind a JS AbortFlag, or a fresh never-raised one when `v` is not an AbortFlag.
  static AbortState From(Napi::Env env, Napi::Value v);

 private:
  Napi::Value Abort(const Napi::CallbackInfo& info);
  Napi::Value Aborted(const Napi::CallbackInfo& info);
  AbortState state_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace minigpt
