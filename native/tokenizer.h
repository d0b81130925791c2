// Text to tokens with llama.cpp's exact ids, in time linear in the text.
//
// llama.cpp splits text at special tokens (tokenizer_st_partition in llama-vocab.cpp) with a
// std::forward_list walked from its head for every occurrence: quadratic in the number of
// special tokens in the text (300k of them took minutes), and not abortable. We do the same
// split ourselves, in the same order and with the same strip rules, then hand each piece of
// plain text to llama_tokenize on its own, which is what llama.cpp does with each piece.
#pragma once
#include <atomic>
#include <cstddef>
#include <string>
#include <vector>

#include "llama.h"

namespace minigpt {

// [begin, end) in UTF-8 bytes.
struct ByteRange {
  size_t begin = 0;
  size_t end = 0;
};

// Built once per vocabulary; immutable afterwards, so any thread may use it at once.
class Tokenizer {
 public:
  explicit Tokenizer(const llama_vocab* vocab);

  // The ids llama_tokenize(text, add_special, parse_special) gives. `plain` (sorted,
  // non-overlapping) marks text that is never read as a CONTROL or UNKNOWN token, even with
  // parse_special: an occurrence overlapping a plain range stays text. USER_DEFINED tokens are
  // split out everywhere, as llama.cpp does even without parse_special. Throws NativeError
  // ERR_ABORTED when `abort` is raised, ERR_INVALID_ARGUMENT for text over 1 GiB.
  std::vector<llama_token> Tokenize(const std::string& text, bool add_special, bool parse_special,
                                    const std::vector<ByteRange>& plain = {},
                                    const std::atomic<bool>* abort = nullptr) const;

 private:
  struct Special {
    llama_token id;
    std::string text;
    llama_token_attr attr;
  };
  const llama_vocab* vocab_;
  std::vector<Special> specials_;  // in the order llama.cpp tries them (longest text first)
};

}  // namespace minigpt
