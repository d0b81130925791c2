#include "generation.h"

#include <algorithm>
#include <utility>

#include "addon.h"
#include "errors.h"
#include "log.h"

namespace minigpt {
namespace {

// Length of the longest prefix of `s` that ends on a whole UTF-8 character. Bytes that can
// never start a character are counted as complete so a bad byte cannot stall the stream.
size_t CompleteUtf8Prefix(const std::string& s) {
  size_t n = s.size();
  size_t i = n;
  for (size_t back = 0; back < 4 && i > 0; ++back) {
    unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII)
      size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
      return (n - (i - 1) >= need) ? n : i - 1;
    }
    --i;
  }
  return n;
}

class Aborted {};

void CheckDecode(int32_t rc, const LogErrorScope& log, const std::atomic<bool>& abort) {
  if (rc == 0) return;
  if (rc == 2 || abort.load()) throw Aborted();
  if (rc == 1) throw NativeError("ERR_CONTEXT_OVERFLOW", "the context has no room left for this batch; use a larger contextSize" + log.Suffix());
  throw NativeError("ERR_DECODE", "llama_decode failed with code " + std::to_string(rc) + log.Suffix());
}

}  // namespace

void GenerationCore::Push(Piece piece) {
  bool was_empty;
  {
    std::unique_lock<std::mutex> lock(mu);
    space.wait(lock, [&] { return queue.size() < request.queue_size || abort.load(); });
    was_empty = queue.empty();
    queue.push_back(std::move(piece));
  }
  if (was_empty) Wake();  // JS drains everything queued in one go
}

void GenerationCore::Wake() {
  Generation* target = owner;
  notify.NonBlockingCall([target](Napi::Env env, Napi::Function) { target->Deliver(env); });
}

void GenerationCore::Finish(std::string reason, std::string code, std::string message) {
  {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
    stop_reason = std::move(reason);
    error_code = std::move(code);
    error_message = std::move(message);
  }
  Wake();
  notify.Release();
}

void GenerationCore::Conclude(std::unique_lock<std::mutex>& session_lock, std::string reason, std::string code, std::string message) {
  session_lock.unlock();
  // Before JS hears of the end: a model disposed right after must not be kept by this request.
  session.reset();
  request.parts.clear();
  Finish(std::move(reason), std::move(code), std::move(message));
}

void GenerationCore::Run() {
  SessionState& s = *session;
  std::unique_lock<std::mutex> session_lock(s.mu);
  LogErrorScope log;

  llama_pos committed = -1;  // n_past known to match history, for recovery after a failed decode
  // Cuts the sequence back to what `history` says it holds, after a failed or aborted decode.
  auto restore = [&] {
    if (!s.pool || committed < 0) return;  // failed before the sequence was touched
    ContextPool::Exclusive ex(*s.pool, nullptr);
    if (!llama_memory_seq_rm(llama_get_memory(ex.ctx()), s.seq, committed, -1)) s.Reset();
  };
  try {
    ContextPool& pool = s.Pool();
    const llama_seq_id seq = s.seq;
    const llama_vocab* vocab = s.model->vocab;

    std::vector<SequenceItem> items;
    const int32_t n_embd_inp = llama_model_n_embd_inp(s.model->model.get());
    for (const PromptPart& part : request.parts) {
      if (part.image && part.image->n_embd != n_embd_inp)  // rows of the wrong width would be read past their end
        throw NativeError("ERR_INVALID_ARGUMENT", "an image embedding of width " + std::to_string(part.image->n_embd) +
                                                      " cannot go into a model of embedding size " + std::to_string(n_embd_inp));
      if (part.image) {
        for (const ImageSegment& seg : part.image->segments) {
          for (llama_token t : seg.tokens) items.push_back({t, nullptr});
          if (seg.block) items.push_back({-1, seg.block});
        }
      } else {
        for (llama_token t : s.model->tokenizer->Tokenize(part.text, part.add_special, true, part.plain, &abort)) items.push_back({t, nullptr});
      }
    }
    if (items.empty()) throw NativeError("ERR_INVALID_ARGUMENT", "the prompt is empty");
    llama_pos total = 0;
    for (const auto& it : items) total += it.n_pos();

    TokenSampler sampler(request.sampling, vocab);
    llama_token token = -1;  // the first generated token, sampled right after the prompt
    uint32_t n_ctx = 0;
    // The whole prompt is evaluated in one turn with the context to itself, ahead of the decode
    // steps of the pool's other sessions (ContextPool: prompts first), so that sessions started
    // together generate together.
    {
      ContextPool::Exclusive ex(pool, &abort);
      llama_context* ctx = ex.ctx();
      size_t k = 0;
      // llama.cpp rounds a context up to a multiple of 256; the session keeps to the size it asked for.
      n_ctx = pool.n_ctx_seq();
      if (s.options.context_size > 0) n_ctx = std::min(n_ctx, s.options.context_size);
      const int32_t n_batch = int32_t(llama_n_batch(ctx));
      if (uint64_t(total) >= n_ctx)
        throw NativeError("ERR_CONTEXT_OVERFLOW", "the prompt needs " + std::to_string(total) + " positions but the context holds " +
                                                      std::to_string(n_ctx) + "; create the session with a larger contextSize or shorten the prompt");
      // Reuse the longest common prefix with what the sequence already holds.
      llama_pos pos = 0;
      while (k < items.size() && k < s.history.size() && items[k] == s.history[k]) pos += items[k++].n_pos();
      if (k == items.size()) pos -= items[--k].n_pos();  // the last item must be evaluated again for fresh logits
      llama_memory_t mem = llama_get_memory(ctx);
      if (!llama_memory_seq_rm(mem, seq, pos, -1)) {  // e.g. recurrent models cannot cut their state
        llama_memory_seq_rm(mem, seq, -1, -1);
        k = 0;
        pos = 0;
      }
      s.history.resize(k);
      s.n_past = pos;
      committed = pos;
      {
        std::lock_guard<std::mutex> lock(s.stats_mu);
        s.stats.prompt_tokens = uint64_t(total);
        s.stats.reused_tokens = uint64_t(pos);
        s.stats.evaluated_tokens = uint64_t(total - pos);
        s.stats.generated_tokens = 0;
        s.stats.total_evaluated += uint64_t(total - pos);
      }

      BatchOwner batch(n_batch);
      for (size_t i = k; i < items.size();) {
        if (abort.load()) throw Aborted();
        if (items[i].block) {
          // A prompt may end with an image (a caption from the image alone): its last row then
          // gives the logits that start the answer.
          const bool last = i + 1 == items.size();
          llama_pos next = s.n_past;
          CheckDecode(items[i].block->Decode(ctx, s.n_past, seq, n_batch, last, &next), log, abort);
          s.history.push_back(items[i]);
          s.n_past = next;
          committed = next;
          ++i;
          if (last && request.max_tokens > 0) token = sampler.Sample(ctx, -1);
          continue;
        }
        batch.Clear();
        size_t j = i;
        for (; j < items.size() && !items[j].block && batch.batch.n_tokens < n_batch; ++j)
          batch.Add(items[j].token, s.n_past + llama_pos(j - i), seq, j + 1 == items.size());
        CheckDecode(llama_decode(ctx, batch.batch), log, abort);
        s.history.insert(s.history.end(), items.begin() + long(i), items.begin() + long(j));
        s.n_past += llama_pos(j - i);
        committed = s.n_past;
        i = j;
        // The logits are this session's only while it holds the context.
        if (i == items.size() && request.max_tokens > 0) token = sampler.Sample(ctx, -1);
      }
    }
    {
      std::lock_guard<std::mutex> lock(s.stats_mu);
      s.stats_n_past = s.n_past;
    }

    std::string pending;  // bytes of a character not yet complete
    // The last token's piece while `pending` holds its unfinished character: it is sent once the
    // character completes, or at the end with U+FFFD in place of the incomplete bytes, so every
    // piece carries the id of a token the model produced.
    std::optional<Piece> held;
    uint32_t generated = 0;
    std::string reason;
    // Ends with the loop: Conclude below may drop the last owner of the pool.
    std::optional<ContextPool::Generating> generating(std::in_place, pool);
    for (;;) {
      if (abort.load()) { reason = "abort"; break; }
      if (generated >= request.max_tokens) { reason = "maxTokens"; break; }
      if (llama_vocab_is_eog(vocab, token)) { reason = "eos"; break; }
      ++generated;
      pending += TokenPiece(vocab, token, false);
      size_t whole = CompleteUtf8Prefix(pending);
      if (held) Push(std::move(*std::exchange(held, std::nullopt)));
      Piece piece{token, pending.substr(0, whole)};
      pending.erase(0, whole);
      if (pending.empty()) Push(std::move(piece));
      else held = std::move(piece);
      {
        std::lock_guard<std::mutex> lock(s.stats_mu);
        s.stats.generated_tokens = generated;
        s.stats.total_generated++;
      }
      if (generated >= request.max_tokens) { reason = "maxTokens"; break; }
      if (uint32_t(s.n_past) + 1 >= n_ctx) { reason = "contextFull"; break; }
      ContextPool::Step step{token, s.n_past, seq, &sampler, &abort};
      pool.Run(step);
      if (step.aborted) { reason = "abort"; break; }
      try {
        CheckDecode(step.rc, log, abort);
      } catch (const Aborted&) {
        reason = "abort";
        break;
      }
      s.history.push_back({token, nullptr});
      committed = ++s.n_past;
      token = step.next;
      {
        std::lock_guard<std::mutex> lock(s.stats_mu);
        s.stats_n_past = s.n_past;
      }
    }
    generating.reset();
    if (held) {
      held->text += "\xEF\xBF\xBD";  // U+FFFD for the bytes of a character the stream ended inside
      Push(std::move(*held));
    }
    Conclude(session_lock, reason);
    return;
  } catch (const Aborted&) {
    restore();  // drop the partly evaluated batch so the sequence matches `history` again
    Conclude(session_lock, "abort");
    return;
  } catch (const NativeError& e) {
    restore();
    Conclude(session_lock, "error", e.code(), e.what());
  } catch (const std::exception& e) {
    s.Reset();
    Conclude(session_lock, "error", "ERR_NATIVE", e.what());
  } catch (...) {
    s.Reset();
    Conclude(session_lock, "error", "ERR_NATIVE", "unknown C++ exception");
  }
}

Napi::Function Generation::Define(Napi::Env env) {
  return DefineClass(env, "NativeGeneration",
                     {InstanceMethod<&Generation::Next>("next"), InstanceMethod<&Generation::Abort>("abort")});
}

Generation::Generation(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Generation>(info) {}

Generation::~Generation() {
  if (core_) core_->Stop();
}

void GenerationCore::Stop() {
  abort.store(true);
  space.notify_all();
  if (thread.joinable()) thread.join();
}

Napi::Value Generation::Start(Napi::Env env, std::shared_ptr<SessionState> session, GenerationRequest request) {
  Addon* addon = Addon::From(env);
  Napi::Object obj = addon->generation_ctor.New({});
  Generation* gen = Unwrap(obj);
  auto core = std::make_shared<GenerationCore>();
  core->session = std::move(session);
  core->request = std::move(request);
  gen->core_ = core;
  core->owner = gen;
  gen->Ref();  // alive until the loop has finished and told us so
  core->notify = Napi::ThreadSafeFunction::New(
      env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "minigpt-generation", 0, 1,
      [gen](Napi::Env env) {  // JS thread, after the loop's Release()
        GenerationCore* c = gen->core_.get();
        if (c->thread.joinable()) c->thread.join();
        if (c->torn_down) return;  // the hook below already ran; JS objects are going away
        if (gen->cleanup_) gen->cleanup_->Remove(env);
        gen->cleanup_.reset();
        gen->Deliver(env);
        gen->Unref();
      });
  gen->cleanup_.emplace(env.AddCleanupHook(
      +[](GenerationCore* c) {
        c->torn_down = true;
        c->Stop();
      },
      core.get()));
  core->thread = std::thread([core] { core->Run(); });
  return obj;
}

void Generation::Deliver(Napi::Env env) {
  if (!pending_) return;
  Napi::HandleScope scope(env);
  std::deque<Piece> pieces;
  std::string reason, code, message;
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    if (core_->queue.empty() && !core_->finished) return;
    pieces.swap(core_->queue);
    reason = core_->stop_reason;
    code = core_->error_code;
    message = core_->error_message;
  }
  core_->space.notify_all();
  Napi::Value result;
  if (!pieces.empty()) {
    // One flat array, [token, text, token, text, ...]: elements set by index cost V8 a fraction
    // of what objects with named properties do, and this runs on every token while the compute
    // threads want every core (docs/benchmarks.md, Notes).
    Napi::Array flat = Napi::Array::New(env, pieces.size() * 2);
    uint32_t i = 0;
    for (const Piece& p : pieces) {
      flat.Set(i++, Napi::Number::New(env, p.token));
      flat.Set(i++, Napi::String::New(env, p.text));
    }
    result = flat;
  } else {  // finished, everything delivered: once per stream
    Napi::Object end = Napi::Object::New(env);
    end.Set("done", true);
    end.Set("stopReason", reason);
    if (!code.empty()) end.Set("error", Addon::From(env)->MakeError(env, code, message));
    result = end;
  }
  auto deferred = std::move(*pending_);
  pending_.reset();
  deferred.Resolve(result);
}

// next(): Promise<[token, text, ...] | { done: true, stopReason: string, error?: Error }>
Napi::Value Generation::Next(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (pending_) {
    Addon::From(env)->Throw(env, "ERR_BUSY", "next() called again before the previous call settled");
    return env.Undefined();
  }
  pending_.emplace(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = pending_->Promise();
  Deliver(env);
  return promise;
}

Napi::Value Generation::Abort(const Napi::CallbackInfo& info) {
  if (core_) {
    core_->abort.store(true);
    core_->space.notify_all();
  }
  return info.Env().Undefined();
}

}  // namespace minigpt
