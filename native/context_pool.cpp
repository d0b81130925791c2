#include "context_pool.h"

#include <algorithm>
#include <chrono>

#include "backends.h"
#include "errors.h"
#include "log.h"
#include "sampler.h"

namespace minigpt {

ContextPool::ContextPool(std::shared_ptr<llama_model> llm, std::shared_ptr<ComputeTurns> turns, PoolKey key)
    : llm_(std::move(llm)), turns_(std::move(turns)), key_(key), taken_(std::max<uint32_t>(key.parallel, 1), false) {}

bool ContextPool::Idle() {
  std::lock_guard<std::mutex> lock(mu_);
  // A released sequence stays taken until its cache is cleared; it counts as free.
  const size_t taken = size_t(std::count(taken_.begin(), taken_.end(), true));
  return taken == to_clear_.size();
}

bool ContextPool::Created() {
  std::lock_guard<std::mutex> lock(mu_);
  return n_ctx_seq_ != 0;
}

void ContextPool::Prepare() {
  Exclusive turn(*this, nullptr, /*compute=*/false);
  turn.ctx();
}

llama_seq_id ContextPool::TryAcquire() {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < taken_.size(); ++i) {
    if (!taken_[i]) {
      taken_[i] = true;
      return llama_seq_id(i);
    }
  }
  // A released sequence not cleared yet: its new owner starts with an empty history, so its
  // first prompt evaluation removes everything the sequence held.
  if (!to_clear_.empty()) {
    llama_seq_id seq = to_clear_.back();
    to_clear_.pop_back();
    return seq;
  }
  return -1;
}

void ContextPool::Release(llama_seq_id seq) {
  std::lock_guard<std::mutex> lock(mu_);
  // Cleared by the next thread that holds the context: the releasing thread may be the JS one.
  to_clear_.push_back(seq);
}

bool ContextPool::AbortRequested(void* data) {
  std::atomic<bool>* target = static_cast<ContextPool*>(data)->abort_target_.load();
  return target != nullptr && target->load();
}

llama_context* ContextPool::CreateLocked() {
  if (ctx_) return ctx_.get();
  LogErrorScope log;
  llama_context_params p = llama_context_default_params();
  const uint32_t per_seq = key_.n_ctx_seq;
  const uint32_t n_seq = uint32_t(taken_.size());
  p.n_ctx = per_seq * n_seq;
  p.n_seq_max = n_seq;
  // A cache of its own per sequence (llama.cpp's KV streams, as llama-server with -np N): a
  // token attends to its own sequence's cells only. One cache for all (kv_unified) made every
  // token attend over the cells of every sequence, masked: with four server slots holding their
  // conversations, a decode step cost 75 ms instead of 58 (TinyLlama-shaped Q4_0, 220-token
  // image prompts), and llama-server's throughput was out of reach. DecodeBatch orders a batch by
  // sequence id, since llama.cpp splits a batch wherever the ids of a stream-per-sequence cache
  // do not follow one another.
  p.kv_unified = false;
  p.n_batch = std::max<uint32_t>(std::max<uint32_t>(key_.n_batch, 32), n_seq);
  // Images from non-causal projectors must fit in one micro-batch; llama.cpp's default is 512.
  p.n_ubatch = std::min<uint32_t>(p.n_batch, 512);
  p.n_threads = key_.threads;
  p.n_threads_batch = key_.threads;
  p.abort_callback = AbortRequested;
  p.abort_callback_data = this;
  p.no_perf = true;
  ctx_.reset(llama_init_from_model(llm_.get(), p));
  if (!ctx_) throw NativeError("ERR_CONTEXT_CREATE", "could not create a context of " + std::to_string(p.n_ctx) + " tokens" + log.Suffix());
  step_batch_ = std::make_unique<BatchOwner>(int32_t(n_seq));  // at most one step per sequence
  // Without a pool of its own, ggml starts and joins the worker threads for every graph, i.e.
  // every token.
  threadpool_ = NewCpuThreadpool(key_.threads);
  if (threadpool_) llama_attach_threadpool(ctx_.get(), threadpool_.get(), nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  n_ctx_seq_ = llama_n_ctx(ctx_.get()) / n_seq;
  return ctx_.get();
}

uint32_t ContextPool::n_ctx_seq() {
  std::lock_guard<std::mutex> lock(mu_);
  return n_ctx_seq_;
}

void ContextPool::ClearReleasedLocked(llama_context* ctx) {
  // mu_ held, busy_ held by this thread.
  for (llama_seq_id seq : to_clear_) {
    llama_memory_seq_rm(llama_get_memory(ctx), seq, -1, -1);
    taken_[size_t(seq)] = false;
  }
  to_clear_.clear();
}

ContextPool::Exclusive::Exclusive(ContextPool& pool, std::atomic<bool>* abort, bool compute) : pool_(pool) {
  std::unique_lock<std::mutex> lock(pool_.mu_);
  // Prompts go before decode steps (as llama-server's loop evaluates waiting prompts before it
  // samples): sessions started together then generate together, every step a full batch, and a
  // running answer pauses for new prompts only, at most one per other sequence of the pool.
  // Taking turns instead (tried) lets the first session run ahead alone, and the pool never
  // gets its sessions back into one batch (measured: 0.62x llama-server's throughput, 4 clients).
  ++pool_.exclusive_waiting_;
  pool_.cv_.wait(lock, [&] { return !pool_.busy_; });
  --pool_.exclusive_waiting_;
  pool_.busy_ = true;
  pool_.abort_target_.store(abort);
  lock.unlock();
  if (compute) turn_.emplace(*pool_.turns_);
}

ContextPool::Exclusive::~Exclusive() {
  turn_.reset();
  {
    std::lock_guard<std::mutex> lock(pool_.mu_);
    pool_.abort_target_.store(nullptr);
    if (pool_.ctx_) pool_.ClearReleasedLocked(pool_.ctx_.get());
    pool_.busy_ = false;
    pool_.freed_at_ = std::chrono::steady_clock::now();
  }
  pool_.cv_.notify_all();
}

llama_context* ContextPool::Exclusive::ctx() {
  llama_context* ctx = pool_.CreateLocked();  // busy_ is ours: nobody else touches ctx_
  std::lock_guard<std::mutex> lock(pool_.mu_);
  pool_.ClearReleasedLocked(ctx);
  return ctx;
}

void ContextPool::DecodeBatch(std::vector<Step*>& steps) {
  llama_context* ctx = ctx_.get();
  step_batch_->Clear();
  // Consecutive ids make one pass over the weights (see CreateLocked).
  std::sort(steps.begin(), steps.end(), [](const Step* a, const Step* b) { return a->seq < b->seq; });
  for (Step* s : steps) step_batch_->Add(s->token, s->pos, s->seq, true);
  const int32_t rc = llama_decode(ctx, step_batch_->batch);
  for (size_t i = 0; i < steps.size(); ++i) {
    steps[i]->rc = rc;
    if (rc == 0) steps[i]->next = steps[i]->sampler->Sample(ctx, int32_t(i));
  }
}

void ContextPool::Run(Step& step, const std::function<void()>& on_batch) {
  std::unique_lock<std::mutex> lock(mu_);
  bool announced = !on_batch;
  const auto announce = [&] {
    announced = true;
    lock.unlock();
    on_batch();
    lock.lock();
  };
  if (waiting_.empty()) gather_since_ = std::chrono::steady_clock::now();
  waiting_.push_back(&step);
  cv_.notify_all();
  for (;;) {
    if (!announced && step.in_batch) {
      announce();
      continue;
    }
    if (step.done) return;
    const bool queued = std::find(waiting_.begin(), waiting_.end(), &step) != waiting_.end();
    if (queued && step.abort && step.abort->load()) {
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), &step));
      step.aborted = true;
      if (!announced) announce();
      return;
    }
    // The window opens when the steps can go: steps that came while a batch was in flight must
    // not leave without the sessions of that batch, which are only now coming back.
    const auto gathered_by = std::max(gather_since_, freed_at_) + kGather;
    const bool all_in = waiting_.size() >= generating_ || std::chrono::steady_clock::now() >= gathered_by;
    if (queued && !busy_ && exclusive_waiting_ == 0) {
      if (!all_in) {
        cv_.wait_until(lock, gathered_by);
        continue;
      }
      // Lead: take every step waiting now into one batch.
      busy_ = true;
      std::vector<Step*> batch;
      batch.swap(waiting_);
      for (Step* s : batch) s->in_batch = true;
      cv_.notify_all();  // the others announce their batch while it runs
      if (ctx_) ClearReleasedLocked(ctx_.get());
      if (!announced) announce();
      lock.unlock();
      {
        ComputeTurns::Turn turn(*turns_, ComputeTurns::Kind::kDecodeSteps);
        DecodeBatch(batch);
      }
      lock.lock();
      for (Step* s : batch) s->done = true;
      busy_ = false;
      freed_at_ = std::chrono::steady_clock::now();
      cv_.notify_all();
      continue;
    }
    // A step waits for the batch in flight (or a prompt) to end; it wakes to check its abort flag.
    cv_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

ContextPool::Generating::Generating(ContextPool& pool) : pool_(pool) {
  std::lock_guard<std::mutex> lock(pool_.mu_);
  ++pool_.generating_;
}

ContextPool::Generating::~Generating() {
  {
    std::lock_guard<std::mutex> lock(pool_.mu_);
    --pool_.generating_;
  }
  pool_.cv_.notify_all();  // a batch waiting for this session leaves without it
}

std::pair<std::shared_ptr<ContextPool>, llama_seq_id> ContextPools::Acquire(const std::shared_ptr<llama_model>& llm, const PoolKey& key) {
  std::vector<std::shared_ptr<ContextPool>> dropped;  // freed after the lock, by whoever holds the last reference
  std::lock_guard<std::mutex> lock(mu_);
  // A pool whose context exists first: that is the time saved.
  std::shared_ptr<ContextPool> found;
  llama_seq_id seq = -1;
  for (int pass = 0; pass < 2 && seq < 0; ++pass) {
    for (const auto& pool : pools_) {
      if (!(pool->key() == key) || (pass == 0 && !pool->Created())) continue;
      if ((seq = pool->TryAcquire()) >= 0) {
        found = pool;
        break;
      }
    }
  }
  if (!found) {
    found = std::make_shared<ContextPool>(llm, turns_, key);
    seq = found->TryAcquire();
    pools_.push_back(found);
  }
  dropped = TrimIdleLocked(kIdleKept, &key);
  return {found, seq};
}

std::vector<std::shared_ptr<ContextPool>> ContextPools::TrimIdle(size_t keep) {
  std::lock_guard<std::mutex> lock(mu_);
  return TrimIdleLocked(keep, nullptr);
}

std::vector<std::shared_ptr<ContextPool>> ContextPools::TrimIdleLocked(size_t keep, const PoolKey* wanted) {
  // Kept: the most recently made idle pools, those of the shape just asked for first.
  std::vector<std::shared_ptr<ContextPool>> idle, out;
  for (const auto& pool : pools_)
    if (pool->Idle()) idle.push_back(pool);
  if (wanted) std::stable_partition(idle.begin(), idle.end(), [&](const auto& p) { return p->key() == *wanted; });
  else std::reverse(idle.begin(), idle.end());
  for (size_t i = keep; i < idle.size(); ++i) out.push_back(idle[i]);
  pools_.erase(std::remove_if(pools_.begin(), pools_.end(),
                              [&](const auto& p) { return std::find(out.begin(), out.end(), p) != out.end(); }),
               pools_.end());
  return out;
}

}  // namespace minigpt
