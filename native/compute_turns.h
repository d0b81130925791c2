// One computation at a time on a model's CPU threads, in the order they asked. ggml's CPU thread
// pools spin while they wait for work, so two graphs computing at once on the same cores (an
// image encode beside the sessions' decode steps, a prompt beside another pool's batch) slow
// each other down many times over: measured with 4 server clients, the gap between two tokens
// of one answer reached 1.3 s while another request's image was encoded beside it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace minigpt {

class ComputeTurns {
 public:
  // Holds the turn from construction to destruction; waits for the earlier ones first.
  class Turn {
   public:
    explicit Turn(ComputeTurns& turns) : turns_(turns) {
      std::unique_lock<std::mutex> lock(turns_.mu_);
      const uint64_t mine = turns_.next_++;
      turns_.cv_.wait(lock, [&] { return turns_.serving_ == mine; });
    }
    ~Turn() {
      {
        std::lock_guard<std::mutex> lock(turns_.mu_);
        ++turns_.serving_;
      }
      turns_.cv_.notify_all();
    }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    ComputeTurns& turns_;
  };

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ = 0;     // the ticket the next caller gets
  uint64_t serving_ = 0;  // the ticket whose turn it is
};

}  // namespace minigpt
