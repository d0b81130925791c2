#include "sampler.h"

namespace minigpt {

TokenSampler::TokenSampler(const SamplingOptions& o, const llama_vocab* vocab)
    : chain_(llama_sampler_chain_init(llama_sampler_chain_default_params())), n_vocab_(llama_vocab_n_tokens(vocab)) {
  const bool penalties =
      (o.repeat_penalty != 1.0f || o.frequency_penalty != 0.0f || o.presence_penalty != 0.0f) && o.repeat_last_n != 0;
  if (penalties)
    llama_sampler_chain_add(chain_.get(), llama_sampler_init_penalties(n_vocab_, o.repeat_last_n, o.repeat_penalty,
                                                                       o.frequency_penalty, o.presence_penalty));
  if (o.temperature <= 0.0f) {
    llama_sampler_chain_add(chain_.get(), llama_sampler_init_greedy());
    argmax_ = !penalties;
    return;
  }
  if (o.top_k > 0) llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_k(o.top_k));
  if (o.top_p < 1.0f) llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_p(o.top_p, 1));
  if (o.min_p > 0.0f) llama_sampler_chain_add(chain_.get(), llama_sampler_init_min_p(o.min_p, 1));
  llama_sampler_chain_add(chain_.get(), llama_sampler_init_temp(o.temperature));
  llama_sampler_chain_add(chain_.get(), llama_sampler_init_dist(o.seed));
}

llama_token TokenSampler::Sample(llama_context* ctx, int32_t idx) {
  // A context that samples on its backend hands over candidates, not a full row: the chain reads those.
  const bool full_row = argmax_ && llama_get_sampled_logits_ith(ctx, idx) == nullptr;
  const float* logits = full_row ? llama_get_logits_ith(ctx, idx) : nullptr;
  if (!logits) return llama_sampler_sample(chain_.get(), ctx, idx);
  // The first of equal maxima, as llama.cpp's greedy sampler picks.
  llama_token best = 0;
  for (llama_token t = 1; t < n_vocab_; ++t)
    if (logits[t] > logits[best]) best = t;
  return best;
}

}  // namespace minigpt
