// JS handle for an encoded image. The image itself is immutable and shared: sessions that
// evaluated it keep it (for prefix matching) even after the handle is disposed.
#pragma once
#include <napi.h>

#include <memory>

#include "projector.h"

namespace minigpt {

class NativeEmbedding : public Napi::ObjectWrap<NativeEmbedding> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeEmbedding(const Napi::CallbackInfo& info);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<const EncodedImage> image);
  // The image behind a JS value, or nullptr (with no exception) if it is not a live embedding.
  static std::shared_ptr<const EncodedImage> From(Napi::Env env, Napi::Value v);

 private:
  Napi::Value NTokens(const Napi::CallbackInfo& info);
  Napi::Value NEmbd(const Napi::CallbackInfo& info);
  Napi::Value ToFloat32Array(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<const EncodedImage> image_;
  size_t external_bytes_ = 0;
};

}  // namespace minigpt
