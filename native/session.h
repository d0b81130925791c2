// A conversation: one llama_context, the sequence it holds, and the generation that runs on
// it. Each request re-sends the whole prompt; only what differs from what the context already
// holds is evaluated (prefix reuse), so multi-turn chat costs only the new turn.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "context_pool.h"
#include "handles.h"
#include "model.h"

namespace minigpt {

struct SessionOptions {
  uint32_t context_size = 0;  // 0: min(training context, 4096)
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
};

class NativeSession : public Napi::ObjectWrap<NativeSession> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeSession(const Napi::CallbackInfo& info);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<ModelState> model, const SessionOptions& options);

 private:
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Reset(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<SessionState> state_;
};

}  // namespace minigpt
