// A promise-returning AsyncWorker around two lambdas: `task` runs on the libuv pool and may
// throw NativeError (its code reaches JS) or anything else (ERR_NATIVE); `resolve` builds the
// JS value on the JS thread. `keep` holds JS values (buffers, wrappers) alive until done.
#pragma once
#include <napi.h>

#include <functional>
#include <string>
#include <utility>

#include "addon.h"
#include "errors.h"

namespace minigpt {

template <typename Result>
class TaskWorker : public Napi::AsyncWorker {
 public:
  using Task = std::function<Result()>;
  using Resolve = std::function<Napi::Value(Napi::Env, Result&)>;

  static Napi::Promise Run(Napi::Env env, Task task, Resolve resolve,
                           std::initializer_list<Napi::Value> keep = {}) {
    auto* w = new TaskWorker(env, std::move(task), std::move(resolve));  // AsyncWorker deletes itself
    uint32_t i = 0;
    for (const auto& v : keep) w->keep_.Value().Set(i++, v);
    auto promise = w->deferred_.Promise();
    w->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      result_ = task_();
    } catch (const NativeError& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "ERR_OUT_OF_MEMORY";
      SetError("out of memory");
    } catch (const std::exception& e) {
      code_ = "ERR_NATIVE";
      SetError(e.what());
    } catch (...) {
      code_ = "ERR_NATIVE";
      SetError("unknown C++ exception");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Value v = resolve_(env, result_);
    if (env.IsExceptionPending()) {
      deferred_.Reject(env.GetAndClearPendingException().Value());
      return;
    }
    deferred_.Resolve(v);
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    deferred_.Reject(Addon::From(env)->MakeError(env, code_, e.Message()));
  }

 private:
  TaskWorker(Napi::Env env, Task task, Resolve resolve)
      : Napi::AsyncWorker(env, "minigpt"), deferred_(Napi::Promise::Deferred::New(env)),
        task_(std::move(task)), resolve_(std::move(resolve)) {
    keep_ = Napi::Persistent(Napi::Array::New(env));
  }

  Napi::Promise::Deferred deferred_;
  Task task_;
  Resolve resolve_;
  Result result_{};
  std::string code_ = "ERR_NATIVE";
  Napi::Reference<Napi::Array> keep_;
};

}  // namespace minigpt
