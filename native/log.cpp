#include "log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "ggml.h"
#include "llama.h"
#include "mtmd_projector.h"

namespace minigpt {
namespace {

struct ThreadLog {
  int depth = 0;
  ggml_log_level line_level = GGML_LOG_LEVEL_NONE;
  std::string line;
  std::string last_error;
  std::string last_warning;
};
thread_local ThreadLog tls;

int ThresholdFromEnv() {
  const char* v = std::getenv("MINIGPT_LOG");
  if (!v) return GGML_LOG_LEVEL_ERROR + 100;  // print nothing
  if (!std::strcmp(v, "debug")) return GGML_LOG_LEVEL_DEBUG;
  if (!std::strcmp(v, "info")) return GGML_LOG_LEVEL_INFO;
  if (!std::strcmp(v, "warn")) return GGML_LOG_LEVEL_WARN;
  return GGML_LOG_LEVEL_ERROR;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

void FinishLine() {
  std::string text = Trim(tls.line);
  if (!text.empty()) {
    if (tls.line_level == GGML_LOG_LEVEL_ERROR) tls.last_error = text;
    else if (tls.line_level == GGML_LOG_LEVEL_WARN) tls.last_warning = text;
  }
  tls.line.clear();
}

void Sink(ggml_log_level level, const char* text, void*) {
  static const int threshold = ThresholdFromEnv();
  if (level != GGML_LOG_LEVEL_CONT) {
    if (!tls.line.empty()) FinishLine();
    tls.line_level = level;
  }
  int effective = level == GGML_LOG_LEVEL_CONT ? tls.line_level : level;
  if (tls.depth > 0 && (effective == GGML_LOG_LEVEL_ERROR || effective == GGML_LOG_LEVEL_WARN)) {
    tls.line += text;
    if (!tls.line.empty() && tls.line.back() == '\n') FinishLine();
  }
  if (effective >= threshold) std::fputs(text, stderr);
}

}  // namespace

void InstallLogSink() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(Sink, nullptr);
    SetMtmdLogSink(Sink, nullptr);
  });
}

LogErrorScope::LogErrorScope() {
  if (tls.depth++ == 0) {
    tls.line.clear();
    tls.last_error.clear();
    tls.last_warning.clear();
  }
}

LogErrorScope::~LogErrorScope() { --tls.depth; }

std::string LogErrorScope::Last() const {
  if (!tls.line.empty()) FinishLine();
  return tls.last_error.empty() ? tls.last_warning : tls.last_error;
}

std::string LogErrorScope::Suffix() const {
  std::string last = Last();
  return last.empty() ? "" : " (llama.cpp: " + last + ")";
}

}  // namespace minigpt
