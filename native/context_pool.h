// Sessions of one model share llama_contexts in groups of `parallel` sequences (the model's
// parallelSessions; 1 gives every session a context of its own). Each session owns one
// sequence of a pool. A prompt is evaluated with the pool to itself, ahead of decode steps; the
// one-token decode steps of every session generating at that moment go into one batch, so 16
// streams cost little more than one. The sequences share one KV cache; each session stops at its share of it. Only
// the thread decoding touches the context.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "compute_turns.h"
#include "handles.h"
#include "model.h"

namespace minigpt {

class TokenSampler;

struct PoolKey {
  uint32_t n_ctx_seq = 0;  // requested tokens per session
  uint32_t n_batch = 512;
  int threads = 0;
  uint32_t parallel = 1;
  bool operator==(const PoolKey& o) const {
    return n_ctx_seq == o.n_ctx_seq && n_batch == o.n_batch && threads == o.threads && parallel == o.parallel;
  }
};

class ContextPool : public std::enable_shared_from_this<ContextPool> {
 public:
  ContextPool(std::shared_ptr<llama_model> llm, std::shared_ptr<ComputeTurns> turns, PoolKey key);

  const PoolKey& key() const { return key_; }

  // No session holds a sequence of this pool. Any thread.
  bool Idle();
  // Whether its context exists yet. Any thread.
  bool Created();
  // Creates the context now (waiting for its turn), so that the first prompt does not pay for
  // it. Any thread but the JS one; throws NativeError(ERR_CONTEXT_CREATE).
  void Prepare();

  // A free sequence id, or -1 when all are taken. Any thread.
  llama_seq_id TryAcquire();
  // Gives a sequence back; its cache is cleared before anyone else gets it. Never blocks.
  void Release(llama_seq_id seq);

  // Holds the pool's context for one thread at a time (prompt evaluation, sampling right after).
  class Exclusive {
   public:
    // `compute`: whether it computes (takes the model's compute turn); creating the context does not.
    Exclusive(ContextPool& pool, std::atomic<bool>* abort, bool compute = true);
    ~Exclusive();
    Exclusive(const Exclusive&) = delete;
    Exclusive& operator=(const Exclusive&) = delete;
    // Creates the context on first use; throws NativeError(ERR_CONTEXT_CREATE).
    llama_context* ctx();

   private:
    ContextPool& pool_;
    std::optional<ComputeTurns::Turn> turn_;  // taken once the context is ours
  };

  struct Step {
    llama_token token;          // to evaluate
    llama_pos pos;
    llama_seq_id seq;
    TokenSampler* sampler;      // samples the next token from this step's logits
    std::atomic<bool>* abort;   // a waiting step gives up when this is raised
    // results
    int32_t rc = 0;             // llama_decode's code for the batch
    llama_token next = -1;
    bool aborted = false;
    bool in_batch = false;      // taken into a batch (set by the batch's lead)
    bool done = false;
  };
  // Evaluates step.token for step.seq together with the steps of the pool's other generating
  // sessions, and samples each one's next token. Blocks until done or aborted. `on_batch`, when
  // given, is called on the caller's thread once the step has joined a batch (before Run
  // returns, whatever happens), without the pool's lock.
  void Run(Step& step, const std::function<void()>& on_batch = {});

  // Held by a session for as long as it runs decode steps. A batch waits (at most kGather) until
  // every such session has handed in its step: on a CPU a pass over the weights costs about the
  // same for one sequence as for sixteen, so a batch that leaves without the sessions a few
  // microseconds behind it makes them pay a whole pass of their own, and the split repeats at
  // every token (measured: half the throughput with 4 streams).
  class Generating {
   public:
    explicit Generating(ContextPool& pool);
    ~Generating();
    Generating(const Generating&) = delete;
    Generating& operator=(const Generating&) = delete;

   private:
    ContextPool& pool_;
  };
  // Long enough for a session to deliver its piece and come back; short beside any pass.
  static constexpr std::chrono::microseconds kGather{5000};

  uint32_t n_ctx_seq();  // the real per-sequence size (llama.cpp rounds up); 0 before creation

 private:
  llama_context* CreateLocked();  // with busy_ held
  void ClearReleasedLocked(llama_context* ctx);
  void DecodeBatch(std::vector<Step*>& steps);
  static bool AbortRequested(void* data);

  std::shared_ptr<llama_model> llm_;
  std::shared_ptr<ComputeTurns> turns_;  // the model's: shared with its image encodes
  PoolKey key_;
  ThreadpoolPtr threadpool_;  // outlives ctx_, which uses it
  ContextPtr ctx_;
  std::unique_ptr<BatchOwner> step_batch_;  // DecodeBatch's, made with ctx_
  uint32_t n_ctx_seq_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;                      // a thread is using the context
  std::vector<bool> taken_;                // per sequence id
  std::vector<llama_seq_id> to_clear_;     // released, cache not yet cleared
  std::vector<Step*> waiting_;             // decode steps for the next batch
  std::chrono::steady_clock::time_point gather_since_;  // when the first of waiting_ came
  std::chrono::steady_clock::time_point freed_at_;      // when busy_ last went false
  size_t generating_ = 0;                  // sessions holding a Generating
  int exclusive_waiting_ = 0;              // threads waiting for an Exclusive turn
  std::atomic<std::atomic<bool>*> abort_target_{nullptr};  // polled during a prompt's decode
};

// The pools of a model, found or created for a session's options. A pool whose sessions are all
// gone is kept (at most kIdleKept of them) for the next session of the same shape: creating a
// context (KV cache, compute buffers, thread pool) is a good part of a new session's first
// prompt. The model's dispose, an idle timeout and memory pressure (JS decides) let them go.
class ContextPools {
 public:
  static constexpr size_t kIdleKept = 1;

  explicit ContextPools(std::shared_ptr<ComputeTurns> turns) : turns_(std::move(turns)) {}

  // A pool with a free sequence for `key`, and that sequence.
  std::pair<std::shared_ptr<ContextPool>, llama_seq_id> Acquire(const std::shared_ptr<llama_model>& llm, const PoolKey& key);
  // Lets go of idle pools beyond `keep`; returns them so that the caller frees their contexts
  // where it wants (not on the JS thread).
  std::vector<std::shared_ptr<ContextPool>> TrimIdle(size_t keep);

 private:
  std::vector<std::shared_ptr<ContextPool>> TrimIdleLocked(size_t keep, const PoolKey* wanted);

  std::shared_ptr<ComputeTurns> turns_;
  std::mutex mu_;
  std::vector<std::shared_ptr<ContextPool>> pools_;
};

}  // namespace minigpt
