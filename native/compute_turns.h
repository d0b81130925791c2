// One computation at a time on a model's CPU threads. ggml's CPU thread pools spin while they
// wait for work, so two graphs computing at once on the same cores (an image encode beside the
// sessions' decode steps, a prompt beside another pool's batch) slow each other down many times
// over: measured with 4 server clients, the gap between two tokens of one answer reached 1.3 s
// while another request's image was encoded beside it.
//
// Image encodes and prompts go first, in the order they asked; batches of decode steps take the
// turns nobody else is waiting for. Requests that arrive together (a server's clients whose
// answers ended at the same step) then encode and evaluate before any of them generates, and
// generate together in full batches, as llama-server's loop does; a running answer pauses only
// for work that asked while it ran. After kMaxWorkStreak turns of work in a row, waiting decode
// steps get one: an app that queues a hundred encodes still sees its streams move.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace minigpt {

class ComputeTurns {
 public:
  enum class Kind { kWork, kDecodeSteps };
  // Enough for the encodes and prompts of a server's requests that arrive together.
  static constexpr uint64_t kMaxWorkStreak = 16;

  // Holds the turn from construction to destruction; waits for the earlier ones first.
  class Turn {
   public:
    explicit Turn(ComputeTurns& turns, Kind kind = Kind::kWork) : turns_(turns) {
      std::unique_lock<std::mutex> lock(turns_.mu_);
      Queue& mine = kind == Kind::kWork ? turns_.work_ : turns_.steps_;
      const uint64_t ticket = mine.next++;
      turns_.cv_.wait(lock, [&] {
        if (turns_.busy_ || mine.serving != ticket) return false;
        const bool steps_due = turns_.work_streak_ >= kMaxWorkStreak;
        return kind == Kind::kWork ? !(steps_due && turns_.steps_.waiting() > 0) : (steps_due || turns_.work_.waiting() == 0);
      });
      ++mine.serving;
      turns_.busy_ = true;
      turns_.work_streak_ = kind == Kind::kWork ? turns_.work_streak_ + 1 : 0;
    }
    ~Turn() {
      {
        std::lock_guard<std::mutex> lock(turns_.mu_);
        turns_.busy_ = false;
      }
      turns_.cv_.notify_all();
    }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    ComputeTurns& turns_;
  };

 private:
  struct Queue {
    uint64_t next = 0;     // the ticket the next caller gets
    uint64_t serving = 0;  // the ticket whose turn is next
    uint64_t waiting() const { return next - serving; }
  };
  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
  uint64_t work_streak_ = 0;  // work turns since the last decode-step turn
  Queue work_;
  Queue steps_;
};

}  // namespace minigpt
