#include "blip2_graph.h"

#include <cmath>

namespace minigpt {
namespace {

ggml_tensor* Apply(ggml_context* ctx, const Linear& l, ggml_tensor* x) {
  ggml_tensor* y = ggml_mul_mat(ctx, l.w, x);
  return l.b ? ggml_add(ctx, y, l.b) : y;
}

ggml_tensor* LayerNorm(ggml_context* ctx, const Norm& n, ggml_tensor* x, float eps) {
  return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), n.w), n.b);
}

// Multi-head attention over already projected q [D, Nq], k and v [D, Nk]; returns [D, Nq].
ggml_tensor* Attention(ggml_context* ctx, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v, int64_t heads) {
  const int64_t D = q->ne[0], hd = D / heads, Nq = q->ne[1], Nk = k->ne[1];
  q = ggml_permute(ctx, ggml_reshape_3d(ctx, ggml_cont(ctx, q), hd, heads, Nq), 0, 2, 1, 3);  // [hd, Nq, heads]
  k = ggml_permute(ctx, ggml_reshape_3d(ctx, ggml_cont(ctx, k), hd, heads, Nk), 0, 2, 1, 3);  // [hd, Nk, heads]
  v = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, ggml_cont(ctx, v), hd, heads, Nk), 1, 2, 0, 3));  // [Nk, hd, heads]
  ggml_tensor* scores = ggml_mul_mat(ctx, k, q);                                   // [Nk, Nq, heads]
  scores = ggml_soft_max_ext(ctx, scores, nullptr, 1.0f / std::sqrt(float(hd)), 0.0f);
  ggml_tensor* out = ggml_mul_mat(ctx, v, scores);                                 // [hd, Nq, heads]
  out = ggml_cont(ctx, ggml_permute(ctx, out, 0, 2, 1, 3));                        // [hd, heads, Nq]
  return ggml_reshape_2d(ctx, out, D, Nq);
}

ggml_tensor* Mlp(ggml_context* ctx, const Linear& up, const Linear& down, ggml_tensor* x) {
  return Apply(ctx, down, ggml_gelu_erf(ctx, Apply(ctx, up, x)));
}

ggml_tensor* Vision(ggml_context* ctx, const Blip2Weights& w, ggml_tensor* image) {
  const Blip2Params& p = w.p;
  const int64_t E = p.v_width, n_patches = p.n_patches();
  // Patch embedding as im2col + mul_mat: ggml_conv_2d would round pixels and kernel to f16
  // even in an f32 file (1.6e-4 relative error against the PyTorch reference).
  const int64_t P = p.patch_size;
  ggml_tensor* cols = ggml_im2col(ctx, w.patch_w, image, P, P, 0, 0, 1, 1, true, GGML_TYPE_F32);  // [3P², g, g]
  ggml_tensor* x = ggml_mul_mat(ctx, ggml_reshape_2d(ctx, w.patch_w, 3 * P * P, E),
                                ggml_reshape_2d(ctx, cols, cols->ne[0], n_patches));              // [E, n_patches]
  x = ggml_add(ctx, x, w.patch_b);
  x = ggml_concat(ctx, ggml_reshape_2d(ctx, w.class_embd, E, 1), x, 1);                        // class token first
  x = ggml_add(ctx, x, w.pos_embd);
  int il = 0;
  for (const VisionBlock& b : w.vision) {
    ggml_tensor* h = LayerNorm(ctx, b.ln1, x, p.v_eps);
    ggml_tensor* qkv = Apply(ctx, b.qkv, h);  // [3E, T]: q rows, then k, then v
    const size_t row = qkv->nb[1], f = ggml_element_size(qkv);
    ggml_tensor* q = ggml_view_2d(ctx, qkv, E, qkv->ne[1], row, 0);
    ggml_tensor* k = ggml_view_2d(ctx, qkv, E, qkv->ne[1], row, E * f);
    ggml_tensor* v = ggml_view_2d(ctx, qkv, E, qkv->ne[1], row, 2 * E * f);
    x = ggml_add(ctx, x, Apply(ctx, b.out, Attention(ctx, q, k, v, p.v_heads)));
    x = ggml_add(ctx, x, Mlp(ctx, b.up, b.down, LayerNorm(ctx, b.ln2, x, p.v_eps)));
    ggml_format_name(x, "blip2.vit.layer_out-%d", il++);  // where an aborted encode may stop (EncodeAbort)
  }
  return LayerNorm(ctx, w.ln_vision, x, p.ln_vision_eps);  // [E, T]
}

ggml_tensor* Qformer(ggml_context* ctx, const Blip2Weights& w, ggml_tensor* image_embeds) {
  const Blip2Params& p = w.p;
  ggml_tensor* h = LayerNorm(ctx, w.q_ln_emb, w.query_tokens, p.q_eps);  // [H, Q]
  int il = 0;
  for (const QformerBlock& b : w.qformer) {
    ggml_tensor* a = Attention(ctx, Apply(ctx, b.self_q, h), Apply(ctx, b.self_k, h), Apply(ctx, b.self_v, h), p.q_heads);
    h = LayerNorm(ctx, b.self_ln, ggml_add(ctx, h, Apply(ctx, b.self_out, a)), p.q_eps);
    if (b.has_cross) {
      ggml_tensor* c = Attention(ctx, Apply(ctx, b.cross_q, h), Apply(ctx, b.cross_k, image_embeds),
                                 Apply(ctx, b.cross_v, image_embeds), p.q_heads);
      h = LayerNorm(ctx, b.cross_ln, ggml_add(ctx, h, Apply(ctx, b.cross_out, c)), p.q_eps);
    }
    h = LayerNorm(ctx, b.ffn_ln, ggml_add(ctx, h, Mlp(ctx, b.up, b.down, h)), p.q_eps);
    ggml_format_name(h, "blip2.qformer.layer_out-%d", il++);
  }
  return h;
}

}  // namespace

size_t Blip2GraphMemory() {
  return ggml_tensor_overhead() * kBlip2GraphNodes + ggml_graph_overhead_custom(kBlip2GraphNodes, false);
}

Blip2Graph BuildBlip2Graph(ggml_context* ctx, const Blip2Weights& w) {
  const Blip2Params& p = w.p;
  Blip2Graph g;
  g.input = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, p.image_size, p.image_size, 3);
  ggml_set_name(g.input, "blip2.input");
  ggml_set_input(g.input);
  ggml_tensor* embeds = Vision(ctx, w, g.input);
  ggml_tensor* tokens;
  if (p.variant == "qformer") {
    tokens = Qformer(ctx, w, embeds);
  } else {
    // Drop the class token and put `input_group` consecutive patch rows side by side.
    const int64_t E = p.v_width, n = p.n_patches();
    ggml_tensor* patches = ggml_cont(ctx, ggml_view_2d(ctx, embeds, E, n, embeds->nb[1], embeds->nb[1]));
    tokens = ggml_reshape_2d(ctx, patches, E * p.input_group, n / p.input_group);
  }
  g.output = Apply(ctx, w.proj, tokens);
  ggml_set_name(g.output, "blip2.output");
  ggml_set_output(g.output);
  g.graph = ggml_new_graph_custom(ctx, kBlip2GraphNodes, false);
  ggml_build_forward_expand(g.graph, g.output);
  return g;
}

}  // namespace minigpt
