// One log sink for llama.cpp, ggml and libmtmd. They report many failures only through their
// logs (mtmd_init_from_file returns nullptr and logs why), so the sink remembers the last
// error line of the calling thread for the error message we raise there.
#pragma once
#include <string>

namespace minigpt {

// Installs the sink into llama/ggml/mtmd once per process. MINIGPT_LOG=debug|info|warn|error
// also prints those levels to stderr (default: nothing printed).
void InstallLogSink();

// Collects the error lines logged on this thread while it lives.
class LogErrorScope {
 public:
  LogErrorScope();
  ~LogErrorScope();
  LogErrorScope(const LogErrorScope&) = delete;
  LogErrorScope& operator=(const LogErrorScope&) = delete;
  // The last error (or, failing that, warning) line logged on this thread, trimmed; "" if none.
  std::string Last() const;
  // " (llama.cpp: <last>)" or "".
  std::string Suffix() const;
};

}  // namespace minigpt
