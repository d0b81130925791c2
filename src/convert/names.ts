/**
 * Maps checkpoint tensor names onto the tensor names of our BLIP-2 GGUF layout
 * (docs/blip2-gguf.md). Three naming schemes are understood:
 *
 * - Hugging Face `Blip2ForConditionalGeneration` / `InstructBlipForConditionalGeneration`
 *   (`vision_model.*`, `qformer.*`, `query_tokens`, `language_projection.*`);
 * - LAVIS / MiniGPT-4 (`visual_encoder.*`, `ln_vision.*`, `Qformer.bert.*`, `query_tokens`,
 *   `llama_proj.*`);
 * - the bare EVA-CLIP ViT of `eva_vit_g.pth` (`cls_token`, `blocks.N.*`, ...), which LAVIS
 *   loads into `visual_encoder`.
 *
 * Everything the image path does not use (text embeddings, the text FFNs `intermediate` /
 * `output`, `cls`, the language model) maps to nothing and is ignored.
 * @module
 */

/** Where a checkpoint tensor goes. */
export interface MappedName {
  /** GGUF tensor name (`v.blk.3.attn_qkv.weight`). */
  readonly target: string;
  /** For EVA's separate attention biases: which third of the fused `attn_qkv.bias` this is. */
  readonly part?: 'q' | 'v';
  readonly scheme: 'hf' | 'lavis' | 'eva';
}

type Rule = [RegExp, (m: RegExpMatchArray) => string, ('q' | 'v')?];

const wb = '(weight|bias)';

// ViT names relative to `visual_encoder.` (LAVIS) or the root (bare EVA).
const EVA_VISION: Rule[] = [
  [/^cls_token$/, () => 'v.class_embd'],
  [/^pos_embed$/, () => 'v.position_embd'],
  [new RegExp(`^patch_embed\\.proj\\.${wb}$`), (m) => `v.patch_embd.${m[1]}`],
  [new RegExp(`^blocks\\.(\\d+)\\.norm1\\.${wb}$`), (m) => `v.blk.${m[1]}.ln1.${m[2]}`],
  [new RegExp(`^blocks\\.(\\d+)\\.norm2\\.${wb}$`), (m) => `v.blk.${m[1]}.ln2.${m[2]}`],
  [new RegExp(`^blocks\\.(\\d+)\\.attn\\.qkv\\.${wb}$`), (m) => `v.blk.${m[1]}.attn_qkv.${m[2]}`],
  [/^blocks\.(\d+)\.attn\.q_bias$/, (m) => `v.blk.${m[1]}.attn_qkv.bias`, 'q'],
  [/^blocks\.(\d+)\.attn\.v_bias$/, (m) => `v.blk.${m[1]}.attn_qkv.bias`, 'v'],
  [new RegExp(`^blocks\\.(\\d+)\\.attn\\.proj\\.${wb}$`), (m) => `v.blk.${m[1]}.attn_out.${m[2]}`],
  [new RegExp(`^blocks\\.(\\d+)\\.mlp\\.fc1\\.${wb}$`), (m) => `v.blk.${m[1]}.ffn_up.${m[2]}`],
  [new RegExp(`^blocks\\.(\\d+)\\.mlp\\.fc2\\.${wb}$`), (m) => `v.blk.${m[1]}.ffn_down.${m[2]}`],
];

// ViT names relative to `vision_model.` (HF).
const HF_VISION: Rule[] = [
  [/^embeddings\.class_embedding$/, () => 'v.class_embd'],
  [/^embeddings\.position_embedding$/, () => 'v.position_embd'],
  [new RegExp(`^embeddings\\.patch_embedding\\.${wb}$`), (m) => `v.patch_embd.${m[1]}`],
  [new RegExp(`^encoder\\.layers\\.(\\d+)\\.layer_norm1\\.${wb}$`), (m) => `v.blk.${m[1]}.ln1.${m[2]}`],
  [new RegExp(`^encoder\\.layers\\.(\\d+)\\.layer_norm2\\.${wb}$`), (m) => `v.blk.${m[1]}.ln2.${m[2]}`],
  [new RegExp(`^encoder\\.layers\\.(\\d+)\\.self_attn\\.qkv\\.${wb}$`), (m) => `v.blk.${m[1]}.attn_qkv.${m[2]}`],
  [/^encoder\.layers\.(\d+)\.self_attn\.q_bias$/, (m) => `v.blk.${m[1]}.attn_qkv.bias`, 'q'],
  [/^encoder\.layers\.(\d+)\.self_attn\.v_bias$/, (m) => `v.blk.${m[1]}.attn_qkv.bias`, 'v'],
  [new RegExp(`^encoder\\.layers\\.(\\d+)\\.self_attn\\.projection\\.${wb}$`), (m) => `v.blk.${m[1]}.attn_out.${m[2]}`],
  [new RegExp(`^encoder\\.layers\\.(\\d+)\\.mlp\\.fc1\\.${wb}$`), (m) => `v.blk.${m[1]}.ffn_up.${m[2]}`],
  [new RegExp(`^encoder\\.layers\\.(\\d+)\\.mlp\\.fc2\\.${wb}$`), (m) => `v.blk.${m[1]}.ffn_down.${m[2]}`],
  [new RegExp(`^post_layernorm\\.${wb}$`), (m) => `v.ln_vision.${m[1]}`],
];

// Q-Former layer names; `attn` is `self` (LAVIS, BERT) or `attention` (HF).
function qformerLayerRules(attn: string): Rule[] {
  const qkv: Record<string, string> = { query: 'q', key: 'k', value: 'v' };
  return [
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.attention\\.${attn}\\.(query|key|value)\\.${wb}$`), (m) => `qf.blk.${m[1]}.self_${qkv[m[2]]}.${m[3]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.attention\\.output\\.dense\\.${wb}$`), (m) => `qf.blk.${m[1]}.self_out.${m[2]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.attention\\.output\\.LayerNorm\\.${wb}$`), (m) => `qf.blk.${m[1]}.self_ln.${m[2]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.crossattention\\.${attn}\\.(query|key|value)\\.${wb}$`), (m) => `qf.blk.${m[1]}.cross_${qkv[m[2]]}.${m[3]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.crossattention\\.output\\.dense\\.${wb}$`), (m) => `qf.blk.${m[1]}.cross_out.${m[2]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.crossattention\\.output\\.LayerNorm\\.${wb}$`), (m) => `qf.blk.${m[1]}.cross_ln.${m[2]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.intermediate_query\\.dense\\.${wb}$`), (m) => `qf.blk.${m[1]}.ffn_up.${m[2]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.output_query\\.dense\\.${wb}$`), (m) => `qf.blk.${m[1]}.ffn_down.${m[2]}`],
    [new RegExp(`^encoder\\.layer\\.(\\d+)\\.output_query\\.LayerNorm\\.${wb}$`), (m) => `qf.blk.${m[1]}.ffn_ln.${m[2]}`],
  ];
}

const LAVIS_QFORMER: Rule[] = [
  [new RegExp(`^embeddings\\.LayerNorm\\.${wb}$`), (m) => `qf.ln_emb.${m[1]}`],
  ...qformerLayerRules('self'),
];

const HF_QFORMER: Rule[] = [
  [new RegExp(`^layernorm\\.${wb}$`), (m) => `qf.ln_emb.${m[1]}`],
  [new RegExp(`^embeddings\\.layernorm\\.${wb}$`), (m) => `qf.ln_emb.${m[1]}`], // InstructBLIP
  ...qformerLayerRules('attention'),
];

const LAVIS_TOP: Rule[] = [
  [new RegExp(`^ln_vision\\.${wb}$`), (m) => `v.ln_vision.${m[1]}`],
  [/^query_tokens$/, () => 'qf.query_tokens'],
  [new RegExp(`^llama_proj\\.${wb}$`), (m) => `proj.${m[1]}`],
];

const HF_TOP: Rule[] = [
  [/^query_tokens$/, () => 'qf.query_tokens'],
  [new RegExp(`^language_projection\\.${wb}$`), (m) => `proj.${m[1]}`],
];

function apply(rules: Rule[], name: string, scheme: MappedName['scheme']): MappedName | undefined {
  for (const [re, target, part] of rules) {
    const m = name.match(re);
    if (m) return part ? { target: target(m), part, scheme } : { target: target(m), scheme };
  }
  return undefined;
}

/**
 * The GGUF tensor a checkpoint tensor becomes, or undefined when the image path does not
 * use it. `query_tokens` is reported as `lavis`: both schemes share the name.
 */
export function mapTensorName(name: string): MappedName | undefined {
  if (name.startsWith('vision_model.')) return apply(HF_VISION, name.slice('vision_model.'.length), 'hf');
  if (name.startsWith('qformer.')) return apply(HF_QFORMER, name.slice('qformer.'.length), 'hf');
  if (name.startsWith('visual_encoder.')) return apply(EVA_VISION, name.slice('visual_encoder.'.length), 'lavis');
  if (name.startsWith('Qformer.bert.')) return apply(LAVIS_QFORMER, name.slice('Qformer.bert.'.length), 'lavis');
  return apply(LAVIS_TOP, name, 'lavis') ?? apply(HF_TOP, name, 'hf') ?? apply(EVA_VISION, name, 'eva');
}

/** The block index of a `v.blk.N.*` or `qf.blk.N.*` name, else undefined. */
export function blockIndex(target: string): { tower: 'v' | 'qf'; index: number } | undefined {
  const m = target.match(/^(v|qf)\.blk\.(\d+)\./);
  return m ? { tower: m[1] as 'v' | 'qf', index: Number(m[2]) } : undefined;
}

// GGUF name -> [LAVIS name, HF name], for messages about missing tensors.
const REVERSE: [RegExp, string, string][] = [
  [/^v\.class_embd$/, 'visual_encoder.cls_token', 'vision_model.embeddings.class_embedding'],
  [/^v\.position_embd$/, 'visual_encoder.pos_embed', 'vision_model.embeddings.position_embedding'],
  [/^v\.patch_embd\.(\w+)$/, 'visual_encoder.patch_embed.proj.$1', 'vision_model.embeddings.patch_embedding.$1'],
  [/^v\.blk\.(\d+)\.ln(1|2)\.(\w+)$/, 'visual_encoder.blocks.$1.norm$2.$3', 'vision_model.encoder.layers.$1.layer_norm$2.$3'],
  [/^v\.blk\.(\d+)\.attn_qkv\.weight$/, 'visual_encoder.blocks.$1.attn.qkv.weight', 'vision_model.encoder.layers.$1.self_attn.qkv.weight'],
  [/^v\.blk\.(\d+)\.attn_qkv\.bias$/, 'visual_encoder.blocks.$1.attn.q_bias and .v_bias', 'vision_model.encoder.layers.$1.self_attn.qkv.bias'],
  [/^v\.blk\.(\d+)\.attn_out\.(\w+)$/, 'visual_encoder.blocks.$1.attn.proj.$2', 'vision_model.encoder.layers.$1.self_attn.projection.$2'],
  [/^v\.blk\.(\d+)\.ffn_up\.(\w+)$/, 'visual_encoder.blocks.$1.mlp.fc1.$2', 'vision_model.encoder.layers.$1.mlp.fc1.$2'],
  [/^v\.blk\.(\d+)\.ffn_down\.(\w+)$/, 'visual_encoder.blocks.$1.mlp.fc2.$2', 'vision_model.encoder.layers.$1.mlp.fc2.$2'],
  [/^v\.ln_vision\.(\w+)$/, 'ln_vision.$1', 'vision_model.post_layernorm.$1'],
  [/^qf\.query_tokens$/, 'query_tokens', 'query_tokens'],
  [/^qf\.ln_emb\.(\w+)$/, 'Qformer.bert.embeddings.LayerNorm.$1', 'qformer.layernorm.$1'],
  [/^qf\.blk\.(\d+)\.self_q\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.attention.self.query.$2', 'qformer.encoder.layer.$1.attention.attention.query.$2'],
  [/^qf\.blk\.(\d+)\.self_k\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.attention.self.key.$2', 'qformer.encoder.layer.$1.attention.attention.key.$2'],
  [/^qf\.blk\.(\d+)\.self_v\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.attention.self.value.$2', 'qformer.encoder.layer.$1.attention.attention.value.$2'],
  [/^qf\.blk\.(\d+)\.self_out\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.attention.output.dense.$2', 'qformer.encoder.layer.$1.attention.output.dense.$2'],
  [/^qf\.blk\.(\d+)\.self_ln\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.attention.output.LayerNorm.$2', 'qformer.encoder.layer.$1.attention.output.LayerNorm.$2'],
  [/^qf\.blk\.(\d+)\.cross_q\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.crossattention.self.query.$2', 'qformer.encoder.layer.$1.crossattention.attention.query.$2'],
  [/^qf\.blk\.(\d+)\.cross_k\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.crossattention.self.key.$2', 'qformer.encoder.layer.$1.crossattention.attention.key.$2'],
  [/^qf\.blk\.(\d+)\.cross_v\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.crossattention.self.value.$2', 'qformer.encoder.layer.$1.crossattention.attention.value.$2'],
  [/^qf\.blk\.(\d+)\.cross_out\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.crossattention.output.dense.$2', 'qformer.encoder.layer.$1.crossattention.output.dense.$2'],
  [/^qf\.blk\.(\d+)\.cross_ln\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.crossattention.output.LayerNorm.$2', 'qformer.encoder.layer.$1.crossattention.output.LayerNorm.$2'],
  [/^qf\.blk\.(\d+)\.ffn_up\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.intermediate_query.dense.$2', 'qformer.encoder.layer.$1.intermediate_query.dense.$2'],
  [/^qf\.blk\.(\d+)\.ffn_down\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.output_query.dense.$2', 'qformer.encoder.layer.$1.output_query.dense.$2'],
  [/^qf\.blk\.(\d+)\.ffn_ln\.(\w+)$/, 'Qformer.bert.encoder.layer.$1.output_query.LayerNorm.$2', 'qformer.encoder.layer.$1.output_query.LayerNorm.$2'],
  [/^proj\.(\w+)$/, 'llama_proj.$1', 'language_projection.$1'],
];

/** "`visual_encoder.cls_token` (LAVIS) or `vision_model.embeddings.class_embedding` (HF)" for a GGUF name. */
export function describeSources(target: string): string {
  for (const [re, lavis, hf] of REVERSE) {
    if (re.test(target)) {
      const a = target.replace(re, lavis);
      const b = target.replace(re, hf);
      return a === b ? a : `${a} (LAVIS) or ${b} (HF)`;
    }
  }
  return target;
}
