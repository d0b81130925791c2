// Errors that cross from native code into JS carry a stable code; the JS side turns
// (code, message) into the matching MinigptError subclass through the factory it registers.
#pragma once
#include <stdexcept>
#include <string>

namespace minigpt {

// Thrown on worker threads and caught in Execute(); never crosses into JS as a C++ exception.
class NativeError : public std::runtime_error {
 public:
  NativeError(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

}  // namespace minigpt
