#include "quantize.h"

#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "abort_flag.h"
#include "addon.h"
#include "errors.h"
#include "llama.h"
#include "log.h"
#include "worker.h"

namespace minigpt {
namespace {

// The job running llama_model_quantize on this thread, if any.
struct QuantizeJob {
  AbortState abort;
  std::function<void(float)> report;
  bool aborted = false;
};
thread_local QuantizeJob* tls_job = nullptr;

struct AbortQuantize : std::runtime_error {
  AbortQuantize() : std::runtime_error("aborted") {}
};

ggml_log_callback g_next = nullptr;
void* g_next_data = nullptr;

void QuantizeLogHook(ggml_log_level level, const char* text, void* data) {
  QuantizeJob* job = tls_job;
  int i = 0, n = 0;
  // "[%4d/%4d] name - [shape], type = ..." opens each tensor of llama_model_quantize_impl.
  if (job && level == GGML_LOG_LEVEL_INFO && text[0] == '[' && std::sscanf(text, "[%d/%d]", &i, &n) == 2 && n > 0) {
    if (job->abort && job->abort->load()) {
      job->aborted = true;
      throw AbortQuantize();
    }
    if (job->report) job->report(float(i - 1) / float(n));
  }
  if (g_next) g_next(level, text, g_next_data);
  (void)data;
}

struct Release {
  std::shared_ptr<Napi::ThreadSafeFunction> fn;
  ~Release() { if (fn) fn->Release(); }
};

}  // namespace

void InstallQuantizeLogHook() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_get(&g_next, &g_next_data);
    llama_log_set(QuantizeLogHook, nullptr);
  });
}

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Addon* addon = Addon::From(env);
  if (!info[0].IsString() || !info[1].IsString() || !info[2].IsNumber() || !info[3].IsNumber()) {
    addon->Throw(env, "ERR_INVALID_ARGUMENT", "quantize expects (input, output, ftype, threads[, abort, onProgress])");
    return env.Undefined();
  }
  std::string input = info[0].As<Napi::String>().Utf8Value();
  std::string output = info[1].As<Napi::String>().Utf8Value();
  int ftype = info[2].As<Napi::Number>().Int32Value();
  int threads = info[3].As<Napi::Number>().Int32Value();
  AbortState abort = AbortFlag::From(env, info[4]);
  std::shared_ptr<Napi::ThreadSafeFunction> progress_fn;
  if (info[5].IsFunction()) {
    progress_fn = std::make_shared<Napi::ThreadSafeFunction>(
        Napi::ThreadSafeFunction::New(env, info[5].As<Napi::Function>(), "minigpt-quantize-progress", 0, 1));
  }
  return TaskWorker<bool>::Run(
      env,
      [input, output, ftype, threads, abort, progress_fn] {
        Release release{progress_fn};
        LogErrorScope log;
        QuantizeJob job;
        job.abort = abort;
        float last = -1.0f;
        if (progress_fn) {
          job.report = [&last, progress_fn](float p) {
            // Only increases of at least 1% cross threads.
            if (p < 0.0f || p >= 1.0f || (last >= 0.0f && p - last < 0.01f)) return;
            last = p;
            progress_fn->NonBlockingCall([p](Napi::Env env, Napi::Function cb) {
              cb.Call({Napi::Number::New(env, p)});
              if (env.IsExceptionPending()) env.GetAndClearPendingException();  // TS wraps the callback
            });
          };
        }
        llama_model_quantize_params params = llama_model_quantize_default_params();
        params.nthread = threads;
        params.ftype = static_cast<llama_ftype>(ftype);
        // llama-quantize's COPY: "only copy tensors, no quantizing" (ftype ALL_F32 with only_copy).
        params.only_copy = ftype < 0;
        if (ftype < 0) params.ftype = LLAMA_FTYPE_ALL_F32;
        tls_job = &job;
        uint32_t rc;
        try {
          rc = llama_model_quantize(input.c_str(), output.c_str(), &params);
        } catch (...) {
          tls_job = nullptr;
          throw;
        }
        tls_job = nullptr;
        if (job.aborted) throw NativeError("ERR_ABORTED", "The quantization was aborted");
        if (rc != 0) {
          std::string why = log.Last();
          bool needs_imatrix = why.find("imatrix") != std::string::npos || why.find("importance matrix") != std::string::npos;
          throw NativeError(needs_imatrix ? "ERR_INVALID_ARGUMENT" : "ERR_MODEL_LOAD",
                            "llama_model_quantize failed" + (why.empty() ? std::string() : ": " + why));
        }
        return true;
      },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

}  // namespace minigpt
