#include "abort_flag.h"

#include "addon.h"

namespace minigpt {

Napi::Function AbortFlag::Define(Napi::Env env) {
  return DefineClass(env, "AbortFlag", {InstanceMethod<&AbortFlag::Abort>("abort"),
                                        InstanceAccessor<&AbortFlag::Aborted>("aborted")});
}

AbortFlag::AbortFlag(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AbortFlag>(info) {}

AbortState AbortFlag::From(Napi::Env env, Napi::Value v) {
  Addon* addon = Addon::From(env);
  if (v.IsObject() && v.As<Napi::Object>().InstanceOf(addon->abort_ctor.Value())) {
    if (AbortFlag* flag = Unwrap(v.As<Napi::Object>())) return flag->state_;
  }
  return std::make_shared<std::atomic<bool>>(false);
}

Napi::Value AbortFlag::Abort(const Napi::CallbackInfo& info) {
  state_->store(true);
  return info.Env().Undefined();
}

Napi::Value AbortFlag::Aborted(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), state_->load());
}

}  // namespace minigpt
