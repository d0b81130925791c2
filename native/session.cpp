#include "session.h"

#include <algorithm>
#include <tuple>

#include "errors.h"

namespace minigpt {
namespace {

void CheckDecode(int32_t rc, const LogErrorScope& log, const std::atomic<bool>& abort) {
  if (rc == 0) return;
  if (rc == 2 || abort.load()) throw EvaluationAborted();
  if (rc == 1) throw NativeError("ERR_CONTEXT_OVERFLOW", "the context has no room left for this batch; use a larger contextSize" + log.Suffix());
  throw NativeError("ERR_DECODE", "llama_decode failed with code " + std::to_string(rc) + log.Suffix());
}

}  // namespace

SessionState::~SessionState() {
  if (pool) pool->Release(seq);
}

ContextPool& SessionState::Pool() {
  if (!pool) {
    PoolKey key{options.context_size, options.batch_size, options.threads, std::max<uint32_t>(options.parallel, 1)};
    std::tie(pool, seq) = model->pools->Acquire(model->model, key);
  }
  return *pool;
}

void SessionState::Reset() {
  history.clear();
  n_past = 0;
}

std::vector<SequenceItem> SessionState::PromptItems(const std::vector<PromptPart>& parts, std::atomic<bool>& abort) {
  std::vector<SequenceItem> items;
  const int32_t n_embd_inp = llama_model_n_embd_inp(model->model.get());
  for (const PromptPart& part : parts) {
    if (part.image && part.image->n_embd != n_embd_inp)  // rows of the wrong width would be read past their end
      throw NativeError("ERR_INVALID_ARGUMENT", "an image embedding of width " + std::to_string(part.image->n_embd) +
                                                    " cannot go into a model of embedding size " + std::to_string(n_embd_inp));
    if (part.image) {
      for (const ImageSegment& seg : part.image->segments) {
        for (llama_token t : seg.tokens) items.push_back({t, nullptr});
        if (seg.block) items.push_back({-1, seg.block});
      }
    } else {
      for (llama_token t : model->tokenizer->Tokenize(part.text, part.add_special, true, part.plain, &abort)) items.push_back({t, nullptr});
    }
  }
  if (items.empty()) throw NativeError("ERR_INVALID_ARGUMENT", "the prompt is empty");
  return items;
}

llama_token SessionState::EvaluatePrompt(const std::vector<PromptPart>& parts, TokenSampler* sampler, std::atomic<bool>& abort, const LogErrorScope& log) {
  committed_ = -1;
  ContextPool& pool = Pool();
  const std::vector<SequenceItem> items = PromptItems(parts, abort);
  llama_pos total = 0;
  for (const auto& it : items) total += it.n_pos();

  llama_token token = -1;
  // The whole prompt in one turn, ahead of the decode steps of the pool's other sessions
  // (ContextPool: prompts first), so that sessions started together generate together.
  ContextPool::Exclusive ex(pool, &abort);
  llama_context* ctx = ex.ctx();
  // llama.cpp rounds a context up to a multiple of 256; the session keeps to the size it asked for.
  n_ctx_ = std::min(pool.n_ctx_seq(), options.context_size);
  const int32_t n_batch = int32_t(llama_n_batch(ctx));
  if (uint64_t(total) >= n_ctx_)
    throw NativeError("ERR_CONTEXT_OVERFLOW", "the prompt needs " + std::to_string(total) + " positions but the context holds " +
                                                  std::to_string(n_ctx_) + "; create the session with a larger contextSize or shorten the prompt");
  // Reuse the longest common prefix with what the sequence already holds.
  size_t k = 0;
  llama_pos pos = 0;
  while (k < items.size() && k < history.size() && items[k] == history[k]) pos += items[k++].n_pos();
  if (k == items.size()) pos -= items[--k].n_pos();  // the last item must be evaluated again for fresh logits
  llama_memory_t mem = llama_get_memory(ctx);
  if (!llama_memory_seq_rm(mem, seq, pos, -1)) {  // e.g. recurrent models cannot cut their state
    llama_memory_seq_rm(mem, seq, -1, -1);
    k = 0;
    pos = 0;
  }
  history.resize(k);
  n_past = pos;
  committed_ = pos;
  {
    std::lock_guard<std::mutex> lock(stats_mu);
    stats.prompt_tokens = uint64_t(total);
    stats.reused_tokens = uint64_t(pos);
    stats.evaluated_tokens = uint64_t(total - pos);
    stats.generated_tokens = 0;
    stats.total_evaluated += uint64_t(total - pos);
  }

  BatchOwner batch(n_batch);
  for (size_t i = k; i < items.size();) {
    if (abort.load()) throw EvaluationAborted();
    if (items[i].block) {
      // A prompt may end with an image (a caption from the image alone): its last row then
      // gives the logits that start the answer.
      const bool last = i + 1 == items.size();
      llama_pos next = n_past;
      CheckDecode(items[i].block->Decode(ctx, n_past, seq, n_batch, last, &next), log, abort);
      history.push_back(items[i]);
      n_past = next;
      committed_ = next;
      ++i;
      if (last && sampler) token = sampler->Sample(ctx, -1);
      continue;
    }
    batch.Clear();
    size_t j = i;
    for (; j < items.size() && !items[j].block && batch.batch.n_tokens < n_batch; ++j)
      batch.Add(items[j].token, n_past + llama_pos(j - i), seq, j + 1 == items.size());
    CheckDecode(llama_decode(ctx, batch.batch), log, abort);
    history.insert(history.end(), items.begin() + long(i), items.begin() + long(j));
    n_past += llama_pos(j - i);
    committed_ = n_past;
    i = j;
    // The logits are this session's only while it holds the context.
    if (i == items.size() && sampler) token = sampler->Sample(ctx, -1);
  }
  std::lock_guard<std::mutex> lock(stats_mu);
  stats_n_past = n_past;
  return token;
}

void SessionState::RestoreAfterFailure() {
  if (!pool || committed_ < 0) return;  // failed before the sequence was touched
  ContextPool::Exclusive ex(*pool, nullptr);
  if (!llama_memory_seq_rm(llama_get_memory(ex.ctx()), seq, committed_, -1)) Reset();
}

SessionState::Answer::Answer(SessionState& session, TokenSampler& sampler, std::atomic<bool>& abort, const LogErrorScope& log)
    : s_(session), sampler_(sampler), abort_(abort), log_(log), generating_(session.Pool()) {}

std::optional<llama_token> SessionState::Answer::Step(llama_token token, const std::function<void()>& on_batch) {
  ContextPool::Step step{token, s_.n_past, s_.seq, &sampler_, &abort_};
  s_.pool->Run(step, on_batch);
  if (step.aborted) return std::nullopt;
  try {
    CheckDecode(step.rc, log_, abort_);
  } catch (const EvaluationAborted&) {
    return std::nullopt;
  }
  s_.history.push_back({token, nullptr});
  s_.committed_ = ++s_.n_past;
  std::lock_guard<std::mutex> lock(s_.stats_mu);
  s_.stats_n_past = s_.n_past;
  return step.next;
}

void SessionState::Answer::CountGenerated(uint32_t generated) {
  std::lock_guard<std::mutex> lock(s_.stats_mu);
  s_.stats.generated_tokens = generated;
  s_.stats.total_generated++;
}

bool SessionState::Answer::ContextFull() const { return uint32_t(s_.n_past) + 1 >= s_.n_ctx_; }

}  // namespace minigpt
