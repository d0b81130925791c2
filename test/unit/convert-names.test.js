// The BLIP-2 converter's name mapping: HF, LAVIS and bare EVA checkpoint names onto the GGUF
// layout, and the names it reports in messages.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { mapTensorName, describeSources } from '../../dist/convert/names.js';

describe('name mapping', () => {
  const cases = {
    // HF
    'vision_model.embeddings.patch_embedding.weight': 'v.patch_embd.weight',
    'vision_model.embeddings.class_embedding': 'v.class_embd',
    'vision_model.embeddings.position_embedding': 'v.position_embd',
    'vision_model.encoder.layers.7.layer_norm1.bias': 'v.blk.7.ln1.bias',
    'vision_model.encoder.layers.7.self_attn.qkv.weight': 'v.blk.7.attn_qkv.weight',
    'vision_model.encoder.layers.7.self_attn.qkv.bias': 'v.blk.7.attn_qkv.bias',
    'vision_model.encoder.layers.7.self_attn.projection.weight': 'v.blk.7.attn_out.weight',
    'vision_model.encoder.layers.38.mlp.fc2.bias': 'v.blk.38.ffn_down.bias',
    'vision_model.post_layernorm.weight': 'v.ln_vision.weight',
    'qformer.layernorm.bias': 'qf.ln_emb.bias',
    'qformer.embeddings.layernorm.weight': 'qf.ln_emb.weight',
    'qformer.encoder.layer.3.attention.attention.key.weight': 'qf.blk.3.self_k.weight',
    'qformer.encoder.layer.3.attention.output.LayerNorm.weight': 'qf.blk.3.self_ln.weight',
    'qformer.encoder.layer.4.crossattention.attention.value.bias': 'qf.blk.4.cross_v.bias',
    'qformer.encoder.layer.4.crossattention.output.dense.weight': 'qf.blk.4.cross_out.weight',
    'qformer.encoder.layer.11.intermediate_query.dense.weight': 'qf.blk.11.ffn_up.weight',
    'qformer.encoder.layer.11.output_query.LayerNorm.bias': 'qf.blk.11.ffn_ln.bias',
    query_tokens: 'qf.query_tokens',
    'language_projection.weight': 'proj.weight',
    // LAVIS / MiniGPT-4
    'visual_encoder.cls_token': 'v.class_embd',
    'visual_encoder.pos_embed': 'v.position_embd',
    'visual_encoder.patch_embed.proj.bias': 'v.patch_embd.bias',
    'visual_encoder.blocks.5.norm2.weight': 'v.blk.5.ln2.weight',
    'visual_encoder.blocks.5.attn.proj.bias': 'v.blk.5.attn_out.bias',
    'visual_encoder.blocks.5.mlp.fc1.weight': 'v.blk.5.ffn_up.weight',
    'ln_vision.bias': 'v.ln_vision.bias',
    'Qformer.bert.embeddings.LayerNorm.weight': 'qf.ln_emb.weight',
    'Qformer.bert.encoder.layer.0.attention.self.query.bias': 'qf.blk.0.self_q.bias',
    'Qformer.bert.encoder.layer.0.attention.output.dense.weight': 'qf.blk.0.self_out.weight',
    'Qformer.bert.encoder.layer.0.crossattention.self.key.weight': 'qf.blk.0.cross_k.weight',
    'Qformer.bert.encoder.layer.0.crossattention.output.LayerNorm.bias': 'qf.blk.0.cross_ln.bias',
    'Qformer.bert.encoder.layer.9.output_query.dense.weight': 'qf.blk.9.ffn_down.weight',
    'llama_proj.bias': 'proj.bias',
    // bare EVA (eva_vit_g.pth)
    cls_token: 'v.class_embd',
    'blocks.38.attn.qkv.weight': 'v.blk.38.attn_qkv.weight',
  };
  test('maps HF, LAVIS and bare EVA names onto the GGUF layout', () => {
    for (const [from, to] of Object.entries(cases)) assert.equal(mapTensorName(from)?.target, to, from);
    assert.deepEqual(mapTensorName('visual_encoder.blocks.2.attn.q_bias'), { target: 'v.blk.2.attn_qkv.bias', part: 'q', scheme: 'lavis' });
    assert.deepEqual(mapTensorName('blocks.2.attn.v_bias'), { target: 'v.blk.2.attn_qkv.bias', part: 'v', scheme: 'eva' });
    assert.equal(mapTensorName('vision_model.encoder.layers.0.self_attn.qkv.weight').scheme, 'hf');
  });
  test('ignores what the image path does not use', () => {
    for (const name of [
      'Qformer.bert.embeddings.word_embeddings.weight', 'Qformer.bert.embeddings.position_ids', 'qformer.embeddings.word_embeddings.weight',
      'Qformer.bert.encoder.layer.0.intermediate.dense.weight', 'Qformer.bert.encoder.layer.0.output.dense.bias',
      'qformer.encoder.layer.0.output.LayerNorm.weight', 'Qformer.cls.predictions.bias', 'language_model.lm_head.weight',
      'llama_model.model.embed_tokens.weight', 'norm.weight', 'head.weight', 'vision_proj.weight', 'temp',
    ]) assert.equal(mapTensorName(name), undefined, name);
  });
  test('describes the checkpoint names of a GGUF tensor for messages', () => {
    assert.equal(describeSources('v.blk.3.ffn_up.weight'), 'visual_encoder.blocks.3.mlp.fc1.weight (LAVIS) or vision_model.encoder.layers.3.mlp.fc1.weight (HF)');
    assert.equal(describeSources('qf.query_tokens'), 'query_tokens');
  });
});
