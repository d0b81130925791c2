#include "embedding.h"

#include <algorithm>

#include "addon.h"

namespace minigpt {

Napi::Function NativeEmbedding::Define(Napi::Env env) {
  return DefineClass(env, "NativeEmbedding",
                     {InstanceAccessor<&NativeEmbedding::NTokens>("nTokens"),
                      InstanceAccessor<&NativeEmbedding::NEmbd>("nEmbd"),
                      InstanceMethod<&NativeEmbedding::ToFloat32Array>("toFloat32Array"),
                      InstanceMethod<&NativeEmbedding::Dispose>("dispose")});
}

NativeEmbedding::NativeEmbedding(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeEmbedding>(info) {
  if (info.Length() == 1 && info[0].IsExternal()) {
    image_ = std::move(*info[0].As<Napi::External<std::shared_ptr<const EncodedImage>>>().Data());  // the External keeps nothing alive
    for (const auto& seg : image_->segments)
      if (seg.block) external_bytes_ += seg.block->embd.size() * sizeof(float);
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), int64_t(external_bytes_));
  }
}

Napi::Object NativeEmbedding::Wrap(Napi::Env env, std::shared_ptr<const EncodedImage> image) {
  auto* holder = new std::shared_ptr<const EncodedImage>(std::move(image));
  auto ext = Napi::External<std::shared_ptr<const EncodedImage>>::New(
      env, holder, [](Napi::Env, std::shared_ptr<const EncodedImage>* p) { delete p; });
  return Addon::From(env)->embedding_ctor.New({ext});
}

std::shared_ptr<const EncodedImage> NativeEmbedding::From(Napi::Env env, Napi::Value v) {
  Addon* addon = Addon::From(env);
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon->embedding_ctor.Value())) return nullptr;
  NativeEmbedding* e = Unwrap(v.As<Napi::Object>());
  return e ? e->image_ : nullptr;
}

Napi::Value NativeEmbedding::NTokens(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), image_ ? image_->n_tokens : 0);
}

Napi::Value NativeEmbedding::NEmbd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), image_ ? image_->n_embd : 0);
}

// The image's embedding rows, in sequence order (wrapping text tokens have none).
Napi::Value NativeEmbedding::ToFloat32Array(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!image_) {
    Addon::From(env)->Throw(env, "ERR_DISPOSED", "the image embedding has been disposed");
    return env.Undefined();
  }
  size_t total = 0;
  for (const auto& seg : image_->segments)
    if (seg.block) total += seg.block->embd.size();
  auto out = Napi::Float32Array::New(env, total);
  float* dst = out.Data();
  for (const auto& seg : image_->segments)
    if (seg.block) dst = std::copy(seg.block->embd.begin(), seg.block->embd.end(), dst);
  return out;
}

Napi::Value NativeEmbedding::Dispose(const Napi::CallbackInfo& info) {
  if (image_) {
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -int64_t(external_bytes_));
    external_bytes_ = 0;
    image_.reset();
  }
  return info.Env().Undefined();
}

}  // namespace minigpt
