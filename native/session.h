// A conversation: its sequence in a shared llama_context and how that sequence is evaluated.
// Each request re-sends the whole prompt; only what differs from what the sequence already
// holds is evaluated (prefix reuse), so multi-turn chat costs only the new turn. The answer's
// tokens are then evaluated one decode step at a time, batched with the pool's other sessions.
// Everything here runs on a generation's thread (generation.h), under SessionState::mu.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "context_pool.h"
#include "handles.h"
#include "log.h"
#include "model.h"
#include "sampler.h"

namespace minigpt {

struct SessionOptions {
  uint32_t context_size = 0;  // tokens; always given (createSession refuses 0)
  uint32_t batch_size = 512;
  int threads = 0;
  uint32_t parallel = 1;  // sessions per shared context (the model's parallelSessions)
};

// One entry of the evaluated sequence: a token, or a block of image embeddings.
struct SequenceItem {
  llama_token token = -1;
  std::shared_ptr<const EmbeddingBlock> block;
  llama_pos n_pos() const { return block ? block->n_pos : 1; }
  bool operator==(const SequenceItem& o) const { return token == o.token && block == o.block; }
};

struct PromptPart {
  std::string text;
  bool add_special = false;  // BOS etc. as the vocabulary asks, on the first text only
  std::vector<ByteRange> plain;  // text never read as a control token (the caller's, not the template's)
  std::shared_ptr<const EncodedImage> image;
};

struct SessionStats {
  uint64_t prompt_tokens = 0;     // last request's prompt length (positions)
  uint64_t reused_tokens = 0;     // ... of which were already in the context
  uint64_t evaluated_tokens = 0;  // ... of which were evaluated now
  uint64_t generated_tokens = 0;  // last request
  uint64_t total_evaluated = 0;   // prompt tokens evaluated over the session's life
  uint64_t total_generated = 0;
};

// Thrown when an evaluation stops because its abort flag was raised.
class EvaluationAborted {};

struct SessionState {
  std::shared_ptr<ModelState> model;
  SessionOptions options;
  std::mutex mu;  // one generation at a time touches pool/seq/history
  std::shared_ptr<ContextPool> pool;  // null until the first generation
  llama_seq_id seq = -1;              // this session's sequence in pool's context
  std::vector<SequenceItem> history;  // what that sequence holds
  llama_pos n_past = 0;
  std::mutex stats_mu;  // stats and n_past, read by JS while a generation runs
  SessionStats stats;
  llama_pos stats_n_past = 0;

  ~SessionState();
  // Takes a sequence of a pool on first use (on the generation thread, never the JS one).
  ContextPool& Pool();
  // Forgets the conversation; the sequence's cache is cut at the next evaluation.
  void Reset();

  // Evaluates a prompt in one turn with the pool's context to itself, reusing the longest
  // prefix the sequence already holds, and samples the answer's first token with `sampler`
  // (-1 when `sampler` is null). Throws EvaluationAborted or NativeError; either way the
  // sequence is left as `history` says (RestoreAfterFailure).
  llama_token EvaluatePrompt(const std::vector<PromptPart>& parts, TokenSampler* sampler, std::atomic<bool>& abort, const LogErrorScope& log);

  // The answer's decode steps. While it exists the session counts as generating: the pool's
  // batches wait for its steps (ContextPool::Generating).
  class Answer {
   public:
    Answer(SessionState& session, TokenSampler& sampler, std::atomic<bool>& abort, const LogErrorScope& log);
    // Evaluates `token` at the end of the sequence and samples the next one; nullopt when
    // aborted. Throws NativeError. `on_batch` as in ContextPool::Run.
    std::optional<llama_token> Step(llama_token token, const std::function<void()>& on_batch = {});
    // Counts a token handed to the caller in the session's stats.
    void CountGenerated(uint32_t generated);
    // No room for another step in the session's share of the context.
    bool ContextFull() const;

   private:
    SessionState& s_;
    TokenSampler& sampler_;
    std::atomic<bool>& abort_;
    const LogErrorScope& log_;
    ContextPool::Generating generating_;
  };

  // Cuts the sequence back to what `history` says it holds, after a failed or aborted decode.
  void RestoreAfterFailure();

 private:
  std::vector<SequenceItem> PromptItems(const std::vector<PromptPart>& parts, std::atomic<bool>& abort);

  uint32_t n_ctx_ = 0;        // this session's share of the context, known once a prompt ran
  llama_pos committed_ = -1;  // n_past known to match history; -1 before the sequence is touched
};

}  // namespace minigpt
