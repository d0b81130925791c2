#include "tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <utility>

#include "errors.h"

namespace minigpt {
namespace {

constexpr int kSpecialAttrs = LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED | LLAMA_TOKEN_ATTR_UNKNOWN;
constexpr int kParsedOnlyAttrs = LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_UNKNOWN;

void AppendLlamaTokens(const llama_vocab* vocab, const char* text, size_t len, bool add_special,
                       std::vector<llama_token>& out) {
  const size_t at = out.size();
  out.resize(at + len + 4);
  int32_t n = llama_tokenize(vocab, text, int32_t(len), out.data() + at, int32_t(out.size() - at), add_special, false);
  if (n == INT32_MIN) throw NativeError("ERR_INVALID_ARGUMENT", "text too long to tokenize");
  if (n < 0) {
    out.resize(at + size_t(-n));
    n = llama_tokenize(vocab, text, int32_t(len), out.data() + at, int32_t(out.size() - at), add_special, false);
    if (n < 0) throw NativeError("ERR_NATIVE", "tokenizer output size changed between calls");
  }
  out.resize(at + size_t(n));
}

class AbortCheck {
 public:
  explicit AbortCheck(const std::atomic<bool>* flag) : flag_(flag) {}
  void Now() const {
    if (flag_ && flag_->load(std::memory_order_relaxed)) throw NativeError("ERR_ABORTED", "tokenization aborted");
  }
  // Cheap enough for inner loops.
  void Sometimes() {
    if ((++count_ & 1023) == 0) Now();
  }

 private:
  const std::atomic<bool>* flag_;
  uint32_t count_ = 0;
};

}  // namespace

Tokenizer::Tokenizer(const llama_vocab* vocab) : vocab_(vocab) {
  // The same list, built the same way, as llama.cpp's cache_special_tokens: std::sort is not
  // stable, but the same input and comparator give the same order, ties included, and ties
  // matter when two tokens of one length can both match at overlapping places.
  if (llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_NONE) return;  // llama_vocab_get_attr would assert
  const int32_t n = llama_vocab_n_tokens(vocab);
  std::vector<llama_token> ids;
  for (llama_token id = 0; id < n; ++id)
    if (llama_vocab_get_attr(vocab, id) & kSpecialAttrs) ids.push_back(id);
  std::vector<size_t> len(size_t(n), 0);
  for (llama_token id : ids) len[size_t(id)] = std::strlen(llama_vocab_get_text(vocab, id));
  std::sort(ids.begin(), ids.end(), [&](llama_token a, llama_token b) { return len[size_t(a)] > len[size_t(b)]; });
  specials_.reserve(ids.size());
  for (llama_token id : ids) specials_.push_back({id, llama_vocab_get_text(vocab, id), llama_vocab_get_attr(vocab, id)});
}

std::vector<llama_token> Tokenizer::Tokenize(const std::string& text, bool add_special, bool parse_special,
                                             const std::vector<ByteRange>& plain,
                                             const std::atomic<bool>* abort) const {
  if (text.size() > size_t(INT32_MAX) / 2) throw NativeError("ERR_INVALID_ARGUMENT", "text too long to tokenize");
  // llama.cpp asserts (aborting the process) when asked to tokenize without a vocabulary.
  if (llama_vocab_type(vocab_) == LLAMA_VOCAB_TYPE_NONE)
    throw NativeError("ERR_INVALID_ARGUMENT", "this model has no vocabulary (tokenizer.ggml.model \"no_vocab\"), so it cannot tokenize text");
  AbortCheck aborted(abort);
  aborted.Now();

  // Text not yet claimed by a special token: begin -> end. Text a strip rule removes is in
  // neither this nor `hits`.
  std::map<size_t, size_t> raw;
  if (!text.empty()) raw.emplace(0, text.size());
  std::vector<std::pair<size_t, llama_token>> hits;  // (offset, id) of each special token found

  for (const Special& sp : specials_) {
    aborted.Now();
    const bool parsed_only = (sp.attr & kParsedOnlyAttrs) != 0;
    if (!parse_special && parsed_only) continue;
    if (sp.text.empty() || raw.empty()) continue;  // llama.cpp would loop for ever on empty text; load renames empty tokens
    const size_t len = sp.text.size();
    const bool shielded = parsed_only && !plain.empty();
    size_t from = 0;
    size_t m;
    // Each pass claims the leftmost non-overlapping occurrences inside unclaimed text, as
    // llama.cpp's pass over its fragments does; one find over the whole text, jumping past
    // claimed text, keeps the pass linear.
    while (from < text.size() && (m = text.find(sp.text, from)) != std::string::npos) {
      aborted.Sometimes();
      const size_t end = m + len;
      auto it = raw.upper_bound(m);
      if (it == raw.begin() || std::prev(it)->second < end) {
        // Not wholly inside one unclaimed fragment: nor is any later occurrence that starts
        // before the next fragment.
        from = it == raw.end() ? text.size() : std::max(it->first, m + 1);
        continue;
      }
      if (shielded) {
        // The first plain range ending after m; ranges are sorted, so their ends are too.
        auto p = std::upper_bound(plain.begin(), plain.end(), m, [](size_t v, const ByteRange& r) { return v < r.end; });
        if (p != plain.end() && p->begin < end) {
          from = p->end;  // every occurrence starting before p->end overlaps p too
          continue;
        }
      }
      --it;
      const size_t frag_begin = it->first, frag_end = it->second;
      raw.erase(it);
      size_t left_end = m;
      if (sp.attr & LLAMA_TOKEN_ATTR_LSTRIP)
        while (left_end > frag_begin && isspace(text[left_end - 1])) --left_end;
      if (left_end > frag_begin) raw.emplace(frag_begin, left_end);
      hits.emplace_back(m, sp.id);
      size_t right_begin = end;
      if (sp.attr & LLAMA_TOKEN_ATTR_RSTRIP)
        while (right_begin < frag_end && isspace(text[right_begin])) ++right_begin;
      if (right_begin < frag_end) raw.emplace(right_begin, frag_end);
      from = right_begin;
    }
  }

  if (hits.empty()) {  // the common case: llama.cpp's own call, with nothing it could split
    std::vector<llama_token> out;
    AppendLlamaTokens(vocab_, text.data(), text.size(), add_special, out);
    return out;
  }

  // What add_special puts around the text, the same for every vocabulary type llama.cpp has:
  // BOS (if the vocabulary adds it; WPM's [CLS] always) first, EOS / SEP last.
  std::vector<llama_token> out, around;
  if (add_special) AppendLlamaTokens(vocab_, "", 0, true, around);
  const size_t n_prefix =
      (llama_vocab_type(vocab_) == LLAMA_VOCAB_TYPE_WPM || llama_vocab_get_add_bos(vocab_)) ? std::min<size_t>(1, around.size()) : 0;
  out.insert(out.end(), around.begin(), around.begin() + long(n_prefix));

  // Every piece of text lies between special tokens (or at an end), where llama.cpp tokenizes
  // it alone, SPM/UGM space prefix included: one llama_tokenize call per piece is the same.
  std::sort(hits.begin(), hits.end());
  auto r = raw.begin();
  for (const auto& [at, id] : hits) {
    for (; r != raw.end() && r->first < at; ++r) {
      aborted.Now();
      AppendLlamaTokens(vocab_, text.data() + r->first, r->second - r->first, false, out);
    }
    out.push_back(id);
  }
  for (; r != raw.end(); ++r) {
    aborted.Now();
    AppendLlamaTokens(vocab_, text.data() + r->first, r->second - r->first, false, out);
  }
  out.insert(out.end(), around.begin() + long(n_prefix), around.end());
  return out;
}

}  // namespace minigpt
