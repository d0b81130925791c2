// One interface for every image projector: RGB pixels in, the pieces an image puts into the
// LLM's sequence out. libmtmd's projectors (mtmd_projector.*) and our BLIP-2 family both
// implement it, so sessions never know which one made an image.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llama.h"

namespace minigpt {

// Embeddings that stand in for image tokens, and how to feed them to the LLM.
class EmbeddingBlock {
 public:
  virtual ~EmbeddingBlock() = default;
  // Decodes the block into `ctx` at position `n_past` of `seq`. Returns llama_decode's code
  // (0 on success) and sets *new_n_past. With `logits_last` the block's last row asks for
  // logits (a prompt that ends with this block samples its first answer token from them), read
  // with llama_get_logits_ith(ctx, -1). Not thread-safe for one context (callers hold it).
  virtual int32_t Decode(llama_context* ctx, llama_pos n_past, llama_seq_id seq, int32_t n_batch, bool logits_last,
                         llama_pos* new_n_past) const = 0;

  std::vector<float> embd;  // n_tokens * n_embd, row-major
  int32_t n_tokens = 0;
  int32_t n_embd = 0;
  llama_pos n_pos = 0;  // positions consumed (differs from n_tokens under M-RoPE)
};

// A run of text tokens the projector wraps around an image (e.g. <start_of_image>), or a block.
struct ImageSegment {
  std::vector<llama_token> tokens;
  std::shared_ptr<const EmbeddingBlock> block;
};

struct EncodedImage {
  std::vector<ImageSegment> segments;
  int32_t n_tokens = 0;  // sequence entries, text segments included
  llama_pos n_pos = 0;
  int32_t n_embd = 0;
};

class Projector {
 public:
  virtual ~Projector() = default;
  // Thread-safe: implementations serialise their own encoder. Throws NativeError; ERR_ABORTED
  // within one encoder layer of `abort` (may be null) being raised, keeping nothing half-made.
  virtual std::shared_ptr<const EncodedImage> Encode(const uint8_t* rgb, uint32_t width, uint32_t height,
                                                     const std::atomic<bool>* abort) = 0;
};

}  // namespace minigpt
