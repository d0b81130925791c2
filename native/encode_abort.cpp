#include "encode_abort.h"

#include <cstring>

#include "ggml.h"

namespace minigpt {

bool EncodeAbort::EvalCallback(ggml_tensor* t, bool ask, void* self) {
  auto* a = static_cast<EncodeAbort*>(self);
  if (!ask) return !a->Raised();  // false stops this split's remaining nodes
  if (a->Raised()) {
    // The scheduler computes at least the first node of every later split, whose inputs the
    // skipped nodes never wrote: an index op there (get_rows, mul_mat_id) could read garbage
    // ids and assert. Every backend skips GGML_OP_NONE, and this graph is thrown away (libmtmd
    // and our BLIP-2 build a new one for each encode).
    t->op = GGML_OP_NONE;
    return true;
  }
  if (++a->nodes_since_split_ >= kMaxNodesPerSplit || std::strstr(ggml_get_name(t), "layer_out")) {
    a->nodes_since_split_ = 0;
    return true;
  }
  return false;
}

bool EncodeAbort::CpuAbortCallback(void* self) { return static_cast<EncodeAbort*>(self)->Raised(); }

}  // namespace minigpt
