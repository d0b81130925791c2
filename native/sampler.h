// Picks the next token from a decode's logits: llama.cpp's sampler chain for the options a
// request gives, with plain greedy decoding done straight on the logits.
#pragma once

#include "handles.h"
#include "llama.h"

namespace minigpt {

// Fallbacks only: src/session.ts (validateStreamOptions) is the one place the defaults are set,
// and it sends every value but an unset seed (random, as here). These match it for a caller of
// the raw binding that leaves one out.
// Always filled from JS (session_binding.cpp); the defaults live in src/session.ts.
struct SamplingOptions {
  float temperature = 0;  // <= 0: greedy
  int32_t top_k = 0;
  float top_p = 1;
  float min_p = 0;
  float repeat_penalty = 1;
  float frequency_penalty = 0;  // OpenAI's: subtracted once per occurrence in the last repeat_last_n
  float presence_penalty = 0;   // OpenAI's: subtracted once if present there
  int32_t repeat_last_n = 0;
  uint32_t seed = 0xFFFFFFFFu;  // LLAMA_DEFAULT_SEED: random
};

class TokenSampler {
 public:
  TokenSampler(const SamplingOptions& options, const llama_vocab* vocab);

  // The token for output row `idx` of the last decode on `ctx` (-1: the last row).
  llama_token Sample(llama_context* ctx, int32_t idx);

 private:
  SamplerPtr chain_;
  // Greedy with nothing else in the chain. llama.cpp's chain copies every logit into a
  // candidate array before its greedy step picks the largest: 12 bytes per vocabulary entry per
  // token (3 MB for a 262k vocabulary) for one argmax.
  bool argmax_ = false;
  int32_t n_vocab_ = 0;
};

}  // namespace minigpt
