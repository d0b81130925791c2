// Stops an image encoder's ggml compute within one layer when the JS AbortFlag of the encode
// in progress is raised. Projectors keep one EncodeAbort, hand its callbacks to ggml once
// (the scheduler's eval callback, the CPU backend's abort callback), and arm it for the
// duration of each encode, under the lock that already serialises their encodes.
#pragma once
#include <atomic>
#include <cstdint>

struct ggml_tensor;

namespace minigpt {

class EncodeAbort {
 public:
  // ggml_backend_sched_eval_callback. Asked (ask=true) about each node, it splits the graph
  // after layer outputs only (names containing "layer_out", or every kMaxNodesPerSplit nodes
  // of a graph without them), so a normal encode runs in a few large pieces; after each piece
  // (ask=false) it stops the compute when the flag is raised. Once raised, every node asked
  // about is emptied and ends a piece, so a remaining split of the scheduler computes nothing.
  static bool EvalCallback(ggml_tensor* t, bool ask, void* self);
  // ggml_abort_callback for the CPU backend: checked after every node, no split needed.
  static bool CpuAbortCallback(void* self);

  // True when the armed encode's flag was raised; the compute's output is then incomplete.
  bool Raised() const { return flag_ && flag_->load(std::memory_order_relaxed); }

  // Arms `abort` (may be null) for one encode; disarms on scope exit, however it ends.
  class Scope {
   public:
    Scope(EncodeAbort& owner, const std::atomic<bool>* abort) : owner_(owner) {
      owner_.flag_ = abort;
      owner_.nodes_since_split_ = 0;
    }
    ~Scope() { owner_.flag_ = nullptr; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    EncodeAbort& owner_;
  };

  // A graph without layer names still gets a chance to stop this often; clip.cpp's
  // transformer layers are 20-40 nodes, so this only matters for unnamed graphs.
  static constexpr int32_t kMaxNodesPerSplit = 256;

 private:
  // Only the encoding thread reads these, and only while a Scope holds them (the projector's
  // encode lock), so plain members suffice; the flag itself is written from the JS thread.
  const std::atomic<bool>* flag_ = nullptr;
  int32_t nodes_since_split_ = 0;
};

}  // namespace minigpt
