#!/usr/bin/python3
"""PyTorch reference for minigpt-node's BLIP-2 projector (EVA ViT + ln_vision + Q-Former
query path + linear projection, and MiniGPT-4 Llama-2's patch_group variant).

Written from /work/shared/MINIGPT4-SPEC.md and docs/blip2-gguf.md with plain torch ops in
float64 (no nn.Module, no library model code), so it is an independent oracle for the native
encoder and the converter.

Subcommands:
  make     --config cfg.json --seed N --out DIR [--vit-prefix P|none] [--vit-dtype float16]
           random weights for a tiny config, saved as DIR/hf/{model.safetensors,config.json}
           (HF Blip2 names) and DIR/lavis/*.pth (LAVIS / MiniGPT-4 names), plus
           DIR/config.json (the full config as used)
  run      --weights DIR --image FILE.rgb --size S --out OUT.f32 [--from lavis|hf]
           forward pass on a raw S x S x 3 uint8 image; writes [tokens, D] float32 LE and
           prints {tokens, dim, max_abs, ln_vision_eps} as JSON. --from hf reads the
           safetensors set with the HF config's eps (ln_vision = vision layer_norm_eps);
           --from lavis (default) the .pth set with LAVIS eps (ln_vision 1e-5).
  selftest --weights DIR   hand-written forward vs torch.nn.functional, HF vs .pth weights,
           and how much each LayerNorm eps moves the output
  resize   --image in.png --size 224 --out out.rgb   PIL RGB + bicubic resize, raw RGB out

The config JSON uses the GGUF key names without "blip2." (see DEFAULTS below).

Run it with Debian's interpreter: /usr/bin/python3 test/reference/blip2_reference.py ...
"""
import argparse
import json
import time
import math
import os
import struct

import numpy as np
import torch

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# Config keys are the GGUF keys without the "blip2." prefix (docs/blip2-gguf.md).
DEFAULTS = {
    'variant': 'qformer',
    'vision.image_size': 224,
    'vision.patch_size': 14,
    'vision.embedding_length': 1408,
    'vision.block_count': 39,
    'vision.attention.head_count': 16,
    'vision.feed_forward_length': 6144,
    'vision.attention.layer_norm_epsilon': 1e-6,
    # ln_vision: 1e-5 in LAVIS / MiniGPT-4 (the .pth set); an HF config has one eps for the
    # blocks and post_layernorm, so the HF set uses vision.attention.layer_norm_epsilon.
    'vision.ln_vision_epsilon': 1e-5,
    'qformer.embedding_length': 768,
    'qformer.block_count': 12,
    'qformer.attention.head_count': 12,
    'qformer.feed_forward_length': 3072,
    'qformer.layer_norm_epsilon': 1e-12,
    'qformer.cross_attention_frequency': 2,
    'qformer.query_count': 32,
    'projection.input_group': None,  # 1 for qformer, 4 for patch_group
    'projection.output_length': 4096,
    # Scales of the random weights (not GGUF keys). The residual streams are kept small so
    # that every LayerNorm's eps visibly changes the output (an eps mix-up is caught), while
    # LayerNorm outputs, attention logits and the final embeddings stay O(1).
    'init.vision_stream': 0.004,
    'init.qformer_stream': 0.01,
    'init.attention_logit': 1.5,
}


def full_config(cfg):
    c = dict(DEFAULTS)
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f'unknown config keys: {sorted(unknown)}')
    c.update(cfg)
    if c['variant'] not in ('qformer', 'patch_group'):
        raise SystemExit(f"variant must be qformer or patch_group, not {c['variant']!r}")
    if c['projection.input_group'] is None:
        c['projection.input_group'] = 1 if c['variant'] == 'qformer' else 4
    E, Hv = c['vision.embedding_length'], c['vision.attention.head_count']
    if E % Hv:
        raise SystemExit('vision width must be a multiple of its heads')
    if c['vision.image_size'] % c['vision.patch_size']:
        raise SystemExit('image_size must be a multiple of patch_size')
    n_patch = (c['vision.image_size'] // c['vision.patch_size']) ** 2
    if c['variant'] == 'qformer':
        if c['qformer.embedding_length'] % c['qformer.attention.head_count']:
            raise SystemExit('qformer hidden must be a multiple of its heads')
    elif n_patch % c['projection.input_group']:
        raise SystemExit('patch count must be a multiple of projection.input_group')
    return c


# ----------------------------------------------------------------------------------------
# Canonical weights: a dict of float64 torch tensors with our own short names, PyTorch
# layouts ([out, in] for Linear, [E, 3, P, P] for the patch conv).
# ----------------------------------------------------------------------------------------

def make_weights(c, seed):
    rng = np.random.default_rng(seed)
    W = {}

    def normal(shape, std, mean=0.0):
        # Rounded to float32 here: the files store float32, and the reference computes in
        # float64 from exactly the stored values.
        a = rng.standard_normal(size=shape) * std + mean
        return torch.from_numpy(a.astype(np.float32).astype(np.float64))

    def linear(name, n_in, n_out, a_in, a_out, bias=True):
        # A Linear mapping a stream of typical amplitude a_in to one of amplitude a_out.
        W[name + '.weight'] = normal((n_out, n_in), a_out / (a_in * math.sqrt(n_in)))
        if bias:
            W[name + '.bias'] = normal((n_out,), 0.3 * a_out)

    def norm(name, n, gain=1.0):
        # LayerNorm whose output has amplitude ~gain.
        W[name + '.weight'] = normal((n,), 0.2 * gain, gain)
        W[name + '.bias'] = normal((n,), 0.3 * gain)

    S, P = c['vision.image_size'], c['vision.patch_size']
    E, F, L = c['vision.embedding_length'], c['vision.feed_forward_length'], c['vision.block_count']
    T = 1 + (S // P) ** 2
    av, al = c['init.vision_stream'], c['init.attention_logit']
    W['patch.weight'] = normal((E, 3, P, P), av / math.sqrt(3 * P * P))
    W['patch.bias'] = normal((E,), 0.5 * av)
    W['cls'] = normal((E,), av)
    W['pos'] = normal((T, E), av)
    for i in range(L):
        b = f'blk.{i}'
        norm(b + '.ln1', E)
        # fused qkv weight, no bias; q_bias and v_bias separately (EVA has no k bias)
        Wq = normal((E, E), al / math.sqrt(E))
        Wk = normal((E, E), al / math.sqrt(E))
        Wv = normal((E, E), 1 / math.sqrt(E))
        W[b + '.qkv.weight'] = torch.cat([Wq, Wk, Wv], 0)
        W[b + '.q_bias'] = normal((E,), 0.3 * al)
        W[b + '.v_bias'] = normal((E,), 0.3)
        linear(b + '.proj', E, E, 1.0, av)
        norm(b + '.ln2', E)
        linear(b + '.fc1', E, F, 1.0, 1.0)
        linear(b + '.fc2', F, E, 0.6, av)
    if c['variant'] == 'qformer':
        norm('ln_vision', E)
    else:
        # MiniGPT-4 Llama-2 has no Q-Former checkpoint: its ln_vision is a default-initialised
        # torch LayerNorm (weight 1, bias 0, eps 1e-5), frozen and so never saved; the real
        # .pth set has no ln_vision tensors and neither does ours.
        W['ln_vision.weight'] = torch.ones(E, dtype=torch.float64)
        W['ln_vision.bias'] = torch.zeros(E, dtype=torch.float64)

    G, D = c['projection.input_group'], c['projection.output_length']
    if c['variant'] == 'qformer':
        H, I = c['qformer.embedding_length'], c['qformer.feed_forward_length']
        Q, f = c['qformer.query_count'], c['qformer.cross_attention_frequency']
        aq = c['init.qformer_stream']
        W['query_tokens'] = normal((Q, H), aq)
        norm('qf.ln_emb', H, aq)
        for i in range(c['qformer.block_count']):
            b = f'qf.{i}'
            linear(b + '.self_q', H, H, aq, al)
            linear(b + '.self_k', H, H, aq, al)
            linear(b + '.self_v', H, H, aq, 1.0)
            linear(b + '.self_out', H, H, 1.0, aq)
            norm(b + '.self_ln', H, aq)
            if i % f == 0:
                linear(b + '.cross_q', H, H, aq, al)
                linear(b + '.cross_k', E, H, 1.0, al)
                linear(b + '.cross_v', E, H, 1.0, 1.0)
                linear(b + '.cross_out', H, H, 1.0, aq)
                norm(b + '.cross_ln', H, aq)
            linear(b + '.ffn_up', H, I, aq, 1.0)
            linear(b + '.ffn_down', I, H, 0.6, aq)
            norm(b + '.ffn_ln', H, aq)
            # The text path's FFN: present in real checkpoints, unused for images.
            linear(b + '.text_up', H, I, aq, 1.0)
            linear(b + '.text_down', I, H, 0.6, aq)
            norm(b + '.text_ln', H, aq)
        linear('proj', H * G, D, aq, 1.0)
        # Unused text-side tensors real checkpoints carry.
        W['unused.word_embeddings'] = normal((50, H), 0.02)
        W['unused.position_embeddings'] = normal((16, H), 0.02)
    else:
        linear('proj', E * G, D, 1.0, 1.0)
    return W


# ----------------------------------------------------------------------------------------
# File formats
# ----------------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: list of (name, float32 or float16 numpy array). 8-byte LE header size, JSON
    header (padded with spaces to a multiple of 8), then the raw little-endian data."""
    header, offset, blobs = {'__metadata__': {'format': 'pt'}}, 0, []
    for name, a in tensors:
        f16 = a.dtype == np.float16
        a = np.ascontiguousarray(a, dtype='<f2' if f16 else '<f4')
        raw = a.tobytes()
        header[name] = {'dtype': 'F16' if f16 else 'F32', 'shape': list(a.shape), 'data_offsets': [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as fh:
        fh.write(struct.pack('<Q', len(h)))
        fh.write(h)
        for raw in blobs:
            fh.write(raw)


def read_safetensors(path):
    dtypes = {'F32': '<f4', 'F16': '<f2', 'F64': '<f8'}
    with open(path, 'rb') as fh:
        n = struct.unpack('<Q', fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        b, e = info['data_offsets']
        a = np.frombuffer(data[b:e], dtype=dtypes[info['dtype']]).reshape(info['shape'])
        out[name] = torch.from_numpy(a.astype(np.float64))
    return out


def f32(t):
    return t.to(torch.float32).contiguous()


def hf_tensors(c, W):
    E, L = c['vision.embedding_length'], c['vision.block_count']
    T = W['pos'].shape[0]
    out = [
        ('vision_model.embeddings.class_embedding', W['cls'].reshape(1, 1, E)),
        ('vision_model.embeddings.position_embedding', W['pos'].reshape(1, T, E)),
        ('vision_model.embeddings.patch_embedding.weight', W['patch.weight']),
        ('vision_model.embeddings.patch_embedding.bias', W['patch.bias']),
    ]
    for i in range(L):
        s, d = f'blk.{i}', f'vision_model.encoder.layers.{i}'
        out += [
            (f'{d}.layer_norm1.weight', W[s + '.ln1.weight']), (f'{d}.layer_norm1.bias', W[s + '.ln1.bias']),
            (f'{d}.self_attn.qkv.weight', W[s + '.qkv.weight']),
            (f'{d}.self_attn.qkv.bias', torch.cat([W[s + '.q_bias'], torch.zeros(E, dtype=torch.float64), W[s + '.v_bias']])),
            (f'{d}.self_attn.projection.weight', W[s + '.proj.weight']), (f'{d}.self_attn.projection.bias', W[s + '.proj.bias']),
            (f'{d}.layer_norm2.weight', W[s + '.ln2.weight']), (f'{d}.layer_norm2.bias', W[s + '.ln2.bias']),
            (f'{d}.mlp.fc1.weight', W[s + '.fc1.weight']), (f'{d}.mlp.fc1.bias', W[s + '.fc1.bias']),
            (f'{d}.mlp.fc2.weight', W[s + '.fc2.weight']), (f'{d}.mlp.fc2.bias', W[s + '.fc2.bias']),
        ]
    out += [('vision_model.post_layernorm.weight', W['ln_vision.weight']), ('vision_model.post_layernorm.bias', W['ln_vision.bias'])]
    if c['variant'] == 'qformer':
        H = c['qformer.embedding_length']
        out += [
            ('query_tokens', W['query_tokens'].reshape(1, -1, H)),
            ('qformer.layernorm.weight', W['qf.ln_emb.weight']), ('qformer.layernorm.bias', W['qf.ln_emb.bias']),
        ]
        names = {
            'self_q': 'attention.attention.query', 'self_k': 'attention.attention.key', 'self_v': 'attention.attention.value',
            'self_out': 'attention.output.dense', 'self_ln': 'attention.output.LayerNorm',
            'cross_q': 'crossattention.attention.query', 'cross_k': 'crossattention.attention.key',
            'cross_v': 'crossattention.attention.value', 'cross_out': 'crossattention.output.dense',
            'cross_ln': 'crossattention.output.LayerNorm',
            'ffn_up': 'intermediate_query.dense', 'ffn_down': 'output_query.dense', 'ffn_ln': 'output_query.LayerNorm',
            'text_up': 'intermediate.dense', 'text_down': 'output.dense', 'text_ln': 'output.LayerNorm',
        }
        out += qformer_renamed(c, W, names, 'qformer.encoder.layer')
    out += [('language_projection.weight', W['proj.weight']), ('language_projection.bias', W['proj.bias'])]
    # A sliver of the language model, which HF Blip2ForConditionalGeneration files hold too.
    D = c['projection.output_length']
    out += [('language_model.model.embed_tokens.weight', torch.full((8, D), 0.01, dtype=torch.float64))]
    return out


def qformer_renamed(c, W, names, prefix):
    out = []
    for i in range(c['qformer.block_count']):
        for short, long_ in names.items():
            for suffix in ('weight', 'bias'):
                key = f'qf.{i}.{short}.{suffix}'
                if key in W:
                    out.append((f'{prefix}.{i}.{long_}.{suffix}', W[key]))
    return out


def hf_config(c):
    vision = {
        'model_type': 'blip_2_vision_model',
        'hidden_size': c['vision.embedding_length'],
        'intermediate_size': c['vision.feed_forward_length'],
        'num_hidden_layers': c['vision.block_count'],
        'num_attention_heads': c['vision.attention.head_count'],
        'image_size': c['vision.image_size'],
        'patch_size': c['vision.patch_size'],
        'hidden_act': 'gelu',
        'layer_norm_eps': c['vision.attention.layer_norm_epsilon'],
        'qkv_bias': True,
    }
    qformer = {
        'model_type': 'blip_2_qformer',
        'hidden_size': c['qformer.embedding_length'],
        'num_hidden_layers': c['qformer.block_count'],
        'num_attention_heads': c['qformer.attention.head_count'],
        'intermediate_size': c['qformer.feed_forward_length'],
        'hidden_act': 'gelu',
        'layer_norm_eps': c['qformer.layer_norm_epsilon'],
        'cross_attention_frequency': c['qformer.cross_attention_frequency'],
        'encoder_hidden_size': c['vision.embedding_length'],
        'vocab_size': 50,
        'max_position_embeddings': 16,
        'position_embedding_type': 'absolute',
    }
    cfg = {
        'architectures': ['Blip2ForConditionalGeneration'],
        'model_type': 'blip-2',
        'num_query_tokens': c['qformer.query_count'],
        'vision_config': vision,
        'qformer_config': qformer,
        'text_config': {'model_type': 'llama', 'hidden_size': c['projection.output_length'], 'vocab_size': 8},
        'initializer_factor': 1.0,
        'initializer_range': 0.02,
        'torch_dtype': 'float32',
    }
    if c['variant'] == 'patch_group':
        # HF has no class for MiniGPT-4 Llama-2; record what we made, for readers and tools.
        del cfg['qformer_config']
        del cfg['num_query_tokens']
        cfg['minigpt_node'] = {'variant': 'patch_group', 'input_group': c['projection.input_group']}
    return cfg


def is_vit(k):
    """Canonical names of the EVA ViT's own tensors (what eva_vit_g.pth holds)."""
    return k in ('patch.weight', 'patch.bias', 'cls', 'pos') or k.startswith('blk.')


def lavis_vit(c, W, prefix, dtype=torch.float32):
    E, L = c['vision.embedding_length'], c['vision.block_count']
    T = W['pos'].shape[0]
    sd = {
        prefix + 'cls_token': W['cls'].reshape(1, 1, E),
        prefix + 'pos_embed': W['pos'].reshape(1, T, E),
        prefix + 'patch_embed.proj.weight': W['patch.weight'],
        prefix + 'patch_embed.proj.bias': W['patch.bias'],
    }
    for i in range(L):
        s, d = f'blk.{i}', f'{prefix}blocks.{i}'
        sd.update({
            f'{d}.norm1.weight': W[s + '.ln1.weight'], f'{d}.norm1.bias': W[s + '.ln1.bias'],
            f'{d}.attn.q_bias': W[s + '.q_bias'], f'{d}.attn.v_bias': W[s + '.v_bias'],
            f'{d}.attn.qkv.weight': W[s + '.qkv.weight'],
            f'{d}.attn.proj.weight': W[s + '.proj.weight'], f'{d}.attn.proj.bias': W[s + '.proj.bias'],
            f'{d}.norm2.weight': W[s + '.ln2.weight'], f'{d}.norm2.bias': W[s + '.ln2.bias'],
            f'{d}.mlp.fc1.weight': W[s + '.fc1.weight'], f'{d}.mlp.fc1.bias': W[s + '.fc1.bias'],
            f'{d}.mlp.fc2.weight': W[s + '.fc2.weight'], f'{d}.mlp.fc2.bias': W[s + '.fc2.bias'],
        })
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def write_lavis(c, W, out_dir, vit_prefix, vit_dtype=torch.float32):
    os.makedirs(out_dir, exist_ok=True)
    torch.save(lavis_vit(c, W, vit_prefix, vit_dtype), os.path.join(out_dir, 'eva_vit_g.pth'))
    E = c['vision.embedding_length']
    if c['variant'] == 'qformer':
        H = c['qformer.embedding_length']
        sd = {
            'query_tokens': W['query_tokens'].reshape(1, -1, H),
            'ln_vision.weight': W['ln_vision.weight'], 'ln_vision.bias': W['ln_vision.bias'],
            'Qformer.bert.embeddings.LayerNorm.weight': W['qf.ln_emb.weight'],
            'Qformer.bert.embeddings.LayerNorm.bias': W['qf.ln_emb.bias'],
            'Qformer.bert.embeddings.word_embeddings.weight': W['unused.word_embeddings'],
            'Qformer.bert.embeddings.position_embeddings.weight': W['unused.position_embeddings'],
            'Qformer.bert.embeddings.position_ids': torch.arange(16).reshape(1, 16),
        }
        names = {
            'self_q': 'attention.self.query', 'self_k': 'attention.self.key', 'self_v': 'attention.self.value',
            'self_out': 'attention.output.dense', 'self_ln': 'attention.output.LayerNorm',
            'cross_q': 'crossattention.self.query', 'cross_k': 'crossattention.self.key',
            'cross_v': 'crossattention.self.value', 'cross_out': 'crossattention.output.dense',
            'cross_ln': 'crossattention.output.LayerNorm',
            'ffn_up': 'intermediate_query.dense', 'ffn_down': 'output_query.dense', 'ffn_ln': 'output_query.LayerNorm',
            'text_up': 'intermediate.dense', 'text_down': 'output.dense', 'text_ln': 'output.LayerNorm',
        }
        sd.update(dict(qformer_renamed(c, W, names, 'Qformer.bert.encoder.layer')))
        sd = {k: (v if k.endswith('position_ids') else f32(v)) for k, v in sd.items()}
        torch.save({'model': sd}, os.path.join(out_dir, 'blip2_pretrained.pth'))
        proj_file = 'pretrained_minigpt4.pth'
    else:
        proj_file = 'pretrained_minigpt4_llama2.pth'
    torch.save({'model': {'llama_proj.weight': f32(W['proj.weight']), 'llama_proj.bias': f32(W['proj.bias'])}},
               os.path.join(out_dir, proj_file))
    return proj_file


def load_lavis(c, d):
    """Back to canonical names from the .pth set (so `run` checks what was written)."""
    def load(name):
        return torch.load(os.path.join(d, name), map_location='cpu')

    vit = load('eva_vit_g.pth')
    prefix = 'visual_encoder.' if 'visual_encoder.cls_token' in vit else ''
    g = lambda k: vit[prefix + k].to(torch.float64)
    E = c['vision.embedding_length']
    W = {'cls': g('cls_token').reshape(E), 'pos': g('pos_embed')[0],
         'patch.weight': g('patch_embed.proj.weight'), 'patch.bias': g('patch_embed.proj.bias')}
    for i in range(c['vision.block_count']):
        s, b = f'blk.{i}', f'blocks.{i}'
        for short, long_ in (('ln1', 'norm1'), ('proj', 'attn.proj'), ('ln2', 'norm2'), ('fc1', 'mlp.fc1'), ('fc2', 'mlp.fc2')):
            W[f'{s}.{short}.weight'] = g(f'{b}.{long_}.weight')
            W[f'{s}.{short}.bias'] = g(f'{b}.{long_}.bias')
        W[s + '.qkv.weight'] = g(f'{b}.attn.qkv.weight')
        W[s + '.q_bias'] = g(f'{b}.attn.q_bias')
        W[s + '.v_bias'] = g(f'{b}.attn.v_bias')
    if c['variant'] == 'qformer':
        m = load('blip2_pretrained.pth')['model']
        m = {k: v.to(torch.float64) for k, v in m.items()}
        W['query_tokens'] = m['query_tokens'][0]
        W['ln_vision.weight'], W['ln_vision.bias'] = m['ln_vision.weight'], m['ln_vision.bias']
        W['qf.ln_emb.weight'] = m['Qformer.bert.embeddings.LayerNorm.weight']
        W['qf.ln_emb.bias'] = m['Qformer.bert.embeddings.LayerNorm.bias']
        names = {
            'self_q': 'attention.self.query', 'self_k': 'attention.self.key', 'self_v': 'attention.self.value',
            'self_out': 'attention.output.dense', 'self_ln': 'attention.output.LayerNorm',
            'cross_q': 'crossattention.self.query', 'cross_k': 'crossattention.self.key',
            'cross_v': 'crossattention.self.value', 'cross_out': 'crossattention.output.dense',
            'cross_ln': 'crossattention.output.LayerNorm',
            'ffn_up': 'intermediate_query.dense', 'ffn_down': 'output_query.dense', 'ffn_ln': 'output_query.LayerNorm',
        }
        for i in range(c['qformer.block_count']):
            for short, long_ in names.items():
                for suffix in ('weight', 'bias'):
                    k = f'Qformer.bert.encoder.layer.{i}.{long_}.{suffix}'
                    if k in m:
                        W[f'qf.{i}.{short}.{suffix}'] = m[k]
        proj = load('pretrained_minigpt4.pth')['model']
    else:
        W['ln_vision.weight'] = torch.ones(E, dtype=torch.float64)
        W['ln_vision.bias'] = torch.zeros(E, dtype=torch.float64)
        proj = load('pretrained_minigpt4_llama2.pth')['model']
    W['proj.weight'] = proj['llama_proj.weight'].to(torch.float64)
    W['proj.bias'] = proj['llama_proj.bias'].to(torch.float64)
    return W


def load_hf(c, d):
    st = read_safetensors(os.path.join(d, 'model.safetensors'))
    E = c['vision.embedding_length']
    v = 'vision_model.'
    W = {'cls': st[v + 'embeddings.class_embedding'].reshape(E), 'pos': st[v + 'embeddings.position_embedding'][0],
         'patch.weight': st[v + 'embeddings.patch_embedding.weight'], 'patch.bias': st[v + 'embeddings.patch_embedding.bias']}
    for i in range(c['vision.block_count']):
        s, b = f'blk.{i}', f'{v}encoder.layers.{i}'
        for short, long_ in (('ln1', 'layer_norm1'), ('proj', 'self_attn.projection'), ('ln2', 'layer_norm2'), ('fc1', 'mlp.fc1'), ('fc2', 'mlp.fc2')):
            W[f'{s}.{short}.weight'] = st[f'{b}.{long_}.weight']
            W[f'{s}.{short}.bias'] = st[f'{b}.{long_}.bias']
        W[s + '.qkv.weight'] = st[f'{b}.self_attn.qkv.weight']
        qkv_b = st[f'{b}.self_attn.qkv.bias']
        assert torch.all(qkv_b[E:2 * E] == 0), 'K bias must be zero'
        W[s + '.q_bias'], W[s + '.v_bias'] = qkv_b[:E], qkv_b[2 * E:]
    W['ln_vision.weight'], W['ln_vision.bias'] = st[v + 'post_layernorm.weight'], st[v + 'post_layernorm.bias']
    if c['variant'] == 'qformer':
        W['query_tokens'] = st['query_tokens'][0]
        W['qf.ln_emb.weight'], W['qf.ln_emb.bias'] = st['qformer.layernorm.weight'], st['qformer.layernorm.bias']
        names = {
            'self_q': 'attention.attention.query', 'self_k': 'attention.attention.key', 'self_v': 'attention.attention.value',
            'self_out': 'attention.output.dense', 'self_ln': 'attention.output.LayerNorm',
            'cross_q': 'crossattention.attention.query', 'cross_k': 'crossattention.attention.key',
            'cross_v': 'crossattention.attention.value', 'cross_out': 'crossattention.output.dense',
            'cross_ln': 'crossattention.output.LayerNorm',
            'ffn_up': 'intermediate_query.dense', 'ffn_down': 'output_query.dense', 'ffn_ln': 'output_query.LayerNorm',
        }
        for i in range(c['qformer.block_count']):
            for short, long_ in names.items():
                for suffix in ('weight', 'bias'):
                    k = f'qformer.encoder.layer.{i}.{long_}.{suffix}'
                    if k in st:
                        W[f'qf.{i}.{short}.{suffix}'] = st[k]
    W['proj.weight'], W['proj.bias'] = st['language_projection.weight'], st['language_projection.bias']
    return W


# ----------------------------------------------------------------------------------------
# The forward pass (spec sections 1-4), float64
# ----------------------------------------------------------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def linear(x, W, name):
    return x @ W[name + '.weight'].T + W[name + '.bias']


def attention(q, k, v, heads):
    """q [Tq, D], k/v [Tk, D] -> [Tq, D]; no mask; scores scaled by head_dim^-1/2."""
    Tq, D = q.shape
    Tk = k.shape[0]
    hd = D // heads
    q = q.reshape(Tq, heads, hd).permute(1, 0, 2)
    k = k.reshape(Tk, heads, hd).permute(1, 0, 2)
    v = v.reshape(Tk, heads, hd).permute(1, 0, 2)
    s = (q @ k.transpose(1, 2)) * (hd ** -0.5)
    s = s - s.max(dim=-1, keepdim=True).values
    p = torch.exp(s)
    p = p / p.sum(dim=-1, keepdim=True)
    return (p @ v).permute(1, 0, 2).reshape(Tq, D)


def preprocess(rgb, S, dtype=torch.float64):
    """raw S*S*3 uint8 -> [3, S, S], scaled to [0, 1] and normalized."""
    x = torch.from_numpy(np.frombuffer(rgb, dtype=np.uint8).reshape(S, S, 3).astype(np.float64)).to(dtype) / 255.0
    mean = torch.tensor(IMAGE_MEAN, dtype=dtype)
    std = torch.tensor(IMAGE_STD, dtype=dtype)
    return ((x - mean) / std).permute(2, 0, 1)


def vit(c, W, img, ln_vision_eps):
    S, P, E = c['vision.image_size'], c['vision.patch_size'], c['vision.embedding_length']
    heads, eps = c['vision.attention.head_count'], c['vision.attention.layer_norm_epsilon']
    g = S // P
    # Conv2d(3, E, kernel=P, stride=P): one dot product per patch, patches in row-major order.
    patches = img.reshape(3, g, P, g, P).permute(1, 3, 0, 2, 4).reshape(g * g, 3 * P * P)
    x = patches @ W['patch.weight'].reshape(E, 3 * P * P).T + W['patch.bias']
    x = torch.cat([W['cls'].reshape(1, E), x], 0) + W['pos']
    zeros = torch.zeros(E, dtype=x.dtype)
    for i in range(c['vision.block_count']):
        b = f'blk.{i}'
        h = layer_norm(x, W[b + '.ln1.weight'], W[b + '.ln1.bias'], eps)
        qkv = h @ W[b + '.qkv.weight'].T + torch.cat([W[b + '.q_bias'], zeros, W[b + '.v_bias']])
        q, k, v = qkv[:, :E], qkv[:, E:2 * E], qkv[:, 2 * E:]
        x = x + linear(attention(q, k, v, heads), W, b + '.proj')
        h = layer_norm(x, W[b + '.ln2.weight'], W[b + '.ln2.bias'], eps)
        x = x + linear(gelu_erf(linear(h, W, b + '.fc1')), W, b + '.fc2')
    return layer_norm(x, W['ln_vision.weight'], W['ln_vision.bias'], ln_vision_eps)


def qformer(c, W, E):
    heads, eps = c['qformer.attention.head_count'], c['qformer.layer_norm_epsilon']
    f = c['qformer.cross_attention_frequency']
    h = layer_norm(W['query_tokens'], W['qf.ln_emb.weight'], W['qf.ln_emb.bias'], eps)
    for i in range(c['qformer.block_count']):
        b = f'qf.{i}'
        a = attention(linear(h, W, b + '.self_q'), linear(h, W, b + '.self_k'), linear(h, W, b + '.self_v'), heads)
        h = layer_norm(h + linear(a, W, b + '.self_out'), W[b + '.self_ln.weight'], W[b + '.self_ln.bias'], eps)
        if i % f == 0:
            a = attention(linear(h, W, b + '.cross_q'), linear(E, W, b + '.cross_k'), linear(E, W, b + '.cross_v'), heads)
            h = layer_norm(h + linear(a, W, b + '.cross_out'), W[b + '.cross_ln.weight'], W[b + '.cross_ln.bias'], eps)
        up = gelu_erf(linear(h, W, b + '.ffn_up'))
        h = layer_norm(h + linear(up, W, b + '.ffn_down'), W[b + '.ffn_ln.weight'], W[b + '.ffn_ln.bias'], eps)
    return h


def forward(c, W, rgb, ln_vision_eps, f16_patch=False):
    """Runs in the dtype of the weights W (float64 normally; float32 with `run --dtype float32`).
    f16_patch rounds the normalized pixels and the patch kernel to f16 first, as ggml_conv_2d
    does (its im2col is f16 unless the kernel is bf16): a diagnostic, not the model."""
    img = preprocess(rgb, c['vision.image_size'], W['cls'].dtype)
    if f16_patch:
        img = preprocess(rgb, c['vision.image_size'], torch.float32).half().to(W['cls'].dtype)
        W = dict(W, **{'patch.weight': W['patch.weight'].half().to(W['cls'].dtype)})
    E = vit(c, W, img, ln_vision_eps)
    if c['variant'] == 'qformer':
        h = qformer(c, W, E)
    else:
        g = c['projection.input_group']
        patches = E[1:]  # drop the class token
        h = patches.reshape(patches.shape[0] // g, g * patches.shape[1])
    return linear(h, W, 'proj')


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------

def cmd_make(args):
    with open(args.config) as fh:
        c = full_config(json.load(fh))
    W = make_weights(c, args.seed)
    vit_f16 = args.vit_dtype == 'float16'
    if vit_f16:
        # Round the ViT's values to f16 so that the f16 files hold exactly what the reference uses.
        for k in W:
            if is_vit(k):
                W[k] = W[k].to(torch.float16).to(torch.float64)
    os.makedirs(os.path.join(args.out, 'hf'), exist_ok=True)
    write_safetensors(os.path.join(args.out, 'hf', 'model.safetensors'),
                      [(n, (t.to(torch.float16) if vit_f16 and n.startswith(('vision_model.embeddings', 'vision_model.encoder')) else f32(t)).numpy())
                       for n, t in hf_tensors(c, W)])
    with open(os.path.join(args.out, 'hf', 'config.json'), 'w') as fh:
        json.dump(hf_config(c), fh, indent=2)
    prefix = '' if args.vit_prefix == 'none' else args.vit_prefix
    proj_file = write_lavis(c, W, os.path.join(args.out, 'lavis'), prefix, torch.float16 if vit_f16 else torch.float32)
    with open(os.path.join(args.out, 'config.json'), 'w') as fh:
        json.dump({**c, 'seed': args.seed}, fh, indent=2)
    files = {
        'hf': ['hf/model.safetensors', 'hf/config.json'],
        'lavis': ['lavis/eva_vit_g.pth'] + (['lavis/blip2_pretrained.pth'] if c['variant'] == 'qformer' else []) + ['lavis/' + proj_file],
    }
    print(json.dumps(files))


def cmd_run(args):
    with open(os.path.join(args.weights, 'config.json')) as fh:
        c = full_config({k: v for k, v in json.load(fh).items() if k != 'seed'})
    if args.size != c['vision.image_size']:
        raise SystemExit(f"--size {args.size} differs from the model's image_size {c['vision.image_size']}")
    if getattr(args, 'from') == 'hf':
        with open(os.path.join(args.weights, 'hf', 'config.json')) as fh:
            hc = json.load(fh)
        # HF: post_layernorm (ln_vision) uses vision_config.layer_norm_eps like the blocks.
        c['vision.attention.layer_norm_epsilon'] = hc['vision_config']['layer_norm_eps']
        ln_vision_eps = hc['vision_config']['layer_norm_eps']
        if 'qformer_config' in hc:
            c['qformer.layer_norm_epsilon'] = hc['qformer_config']['layer_norm_eps']
        W = load_hf(c, os.path.join(args.weights, 'hf'))
    else:
        ln_vision_eps = c['vision.ln_vision_epsilon']
        W = load_lavis(c, os.path.join(args.weights, 'lavis'))
    if args.ln_vision_eps is not None:
        ln_vision_eps = args.ln_vision_eps
    with open(args.image, 'rb') as fh:
        rgb = fh.read()
    if len(rgb) != args.size * args.size * 3:
        raise SystemExit(f'{args.image}: {len(rgb)} bytes, expected {args.size}x{args.size}x3')
    if args.dtype == 'float32':
        W = {k: v.to(torch.float32) for k, v in W.items()}
    with torch.no_grad():
        out = forward(c, W, rgb, ln_vision_eps, args.f16_patch).to(torch.float64)
    np.ascontiguousarray(out.numpy(), dtype='<f4').tofile(args.out)
    print(json.dumps({'tokens': out.shape[0], 'dim': out.shape[1], 'max_abs': float(out.abs().max()),
                      'ln_vision_eps': ln_vision_eps}))


def forward_functional(c, W, rgb, ln_vision_eps):
    """The same network through torch.nn.functional (conv2d, layer_norm, gelu, softmax):
    a second path for `selftest`, to catch layout slips in the hand-written one."""
    import torch.nn.functional as Fn
    S, E = c['vision.image_size'], c['vision.embedding_length']
    img = preprocess(rgb, S)
    x = Fn.conv2d(img[None], W['patch.weight'], W['patch.bias'], stride=c['vision.patch_size'])[0]
    x = x.flatten(1).T
    x = torch.cat([W['cls'][None], x]) + W['pos']

    def mha(q, k, v, heads):
        d = q.shape[1] // heads
        sp = lambda t: t.reshape(t.shape[0], heads, d).transpose(0, 1)
        p = Fn.softmax(sp(q) @ sp(k).transpose(1, 2) / math.sqrt(d), dim=-1)
        return (p @ sp(v)).transpose(0, 1).reshape(q.shape[0], -1)

    ln = lambda t, n, eps: Fn.layer_norm(t, (t.shape[-1],), W[n + '.weight'], W[n + '.bias'], eps)
    lin = lambda t, n: Fn.linear(t, W[n + '.weight'], W[n + '.bias'])
    eps = c['vision.attention.layer_norm_epsilon']
    for i in range(c['vision.block_count']):
        b = f'blk.{i}'
        bias = torch.cat([W[b + '.q_bias'], torch.zeros_like(W[b + '.q_bias']), W[b + '.v_bias']])
        q, k, v = Fn.linear(ln(x, b + '.ln1', eps), W[b + '.qkv.weight'], bias).chunk(3, dim=-1)
        x = x + lin(mha(q, k, v, c['vision.attention.head_count']), b + '.proj')
        x = x + lin(Fn.gelu(lin(ln(x, b + '.ln2', eps), b + '.fc1')), b + '.fc2')
    Ev = ln(x, 'ln_vision', ln_vision_eps)
    if c['variant'] == 'qformer':
        eps, heads = c['qformer.layer_norm_epsilon'], c['qformer.attention.head_count']
        h = ln(W['query_tokens'], 'qf.ln_emb', eps)
        for i in range(c['qformer.block_count']):
            b = f'qf.{i}'
            h = ln(h + lin(mha(lin(h, b + '.self_q'), lin(h, b + '.self_k'), lin(h, b + '.self_v'), heads), b + '.self_out'), b + '.self_ln', eps)
            if i % c['qformer.cross_attention_frequency'] == 0:
                h = ln(h + lin(mha(lin(h, b + '.cross_q'), lin(Ev, b + '.cross_k'), lin(Ev, b + '.cross_v'), heads), b + '.cross_out'), b + '.cross_ln', eps)
            h = ln(h + lin(Fn.gelu(lin(h, b + '.ffn_up')), b + '.ffn_down'), b + '.ffn_ln', eps)
    else:
        g = c['projection.input_group']
        h = torch.stack([torch.cat(list(Ev[1 + j * g:1 + (j + 1) * g])) for j in range((Ev.shape[0] - 1) // g)])
    return lin(h, 'proj')


def cmd_selftest(args):
    """Hand-written forward vs torch.nn.functional, HF set vs .pth set, eps sensitivity."""
    with open(os.path.join(args.weights, 'config.json')) as fh:
        c = full_config({k: v for k, v in json.load(fh).items() if k != 'seed'})
    S = c['vision.image_size']
    rgb = np.random.default_rng(7).integers(0, 256, size=S * S * 3, dtype=np.uint8).tobytes()
    Wl = load_lavis(c, os.path.join(args.weights, 'lavis'))
    Wh = load_hf(c, os.path.join(args.weights, 'hf'))
    same = sorted(Wl) == sorted(Wh) and all(torch.equal(Wl[k], Wh[k]) for k in Wl)
    eps = c['vision.ln_vision_epsilon']
    with torch.no_grad():
        a = forward(c, Wl, rgb, eps)
        b = forward_functional(c, Wl, rgb, eps)
        c2 = dict(c)
        c2['vision.attention.layer_norm_epsilon'] *= 10
        c2['qformer.layer_norm_epsilon'] = 1e-6
        d_vit = forward(c2, Wl, rgb, eps) - a
        d_lnv = forward(c, Wl, rgb, eps * 10) - a
        c3 = dict(c)
        c3['qformer.layer_norm_epsilon'] = 1e-6
        d_qf = forward(c3, Wl, rgb, eps) - a
    scale = float(a.abs().max())
    report = {
        'tokens': a.shape[0], 'dim': a.shape[1], 'max_abs': scale, 'std': float(a.std()),
        'functional_max_rel': float((a - b).abs().max()) / scale,
        'hf_equals_lavis_weights': same,
        'rel_change_vit_eps_x10': float(d_vit.abs().max()) / scale,
        'rel_change_ln_vision_eps_x10': float(d_lnv.abs().max()) / scale,
        'rel_change_qformer_eps_1e-6': float(d_qf.abs().max()) / scale,
    }
    print(json.dumps(report))
    if not same or report['functional_max_rel'] > 1e-10:
        raise SystemExit('selftest failed')


def cmd_resize(args):
    from PIL import Image
    img = Image.open(args.image).convert('RGB').resize((args.size, args.size), Image.BICUBIC)
    with open(args.out, 'wb') as fh:
        fh.write(img.tobytes())


def cmd_bench(args):
    # Times the reference forward in float32 on `--threads` threads. Real-size weights would
    # need 8 GB as float64, so it times two ViT depths and extrapolates linearly in depth.
    with open(args.config) as fh:
        base = json.load(fh)
    torch.set_num_threads(args.threads)
    size = full_config(base)['vision.image_size']
    rgb = bytes((i * 7) % 256 for i in range(size ** 2 * 3))
    times = {}
    for depth in (1, 3):
        c = full_config({**base, 'vision.block_count': depth})
        W = {k: v.to(torch.float32) for k, v in make_weights(c, 0).items()}
        with torch.no_grad():
            forward(c, W, rgb, c['vision.ln_vision_epsilon'])  # warm-up
            best = float('inf')
            for _ in range(args.runs):
                t0 = time.perf_counter()
                forward(c, W, rgb, c['vision.ln_vision_epsilon'])
                best = min(best, time.perf_counter() - t0)
        times[depth] = best
        del W
    per_block = (times[3] - times[1]) / 2
    depth = full_config(base)['vision.block_count']
    total = times[1] + (depth - 1) * per_block
    print(json.dumps({'ms': total * 1000, 'per_vit_block_ms': per_block * 1000, 'measured_depths': {str(k): v * 1000 for k, v in times.items()}}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    m = sub.add_parser('make', help='random weights for a tiny config, as HF safetensors and LAVIS .pth files')
    m.add_argument('--config', required=True)
    m.add_argument('--seed', type=int, default=0)
    m.add_argument('--out', required=True)
    m.add_argument('--vit-prefix', default='visual_encoder.',
                   help="key prefix in eva_vit_g.pth ('none' for bare VisionTransformer keys)")
    m.add_argument('--vit-dtype', choices=['float32', 'float16'], default='float32',
                   help='storage type of the ViT tensors (eva_vit_g.pth and vision_model.* in the HF file); '
                        'float16 rounds their values to f16 first, so every file holds the same numbers')
    m.set_defaults(fn=cmd_make)
    r = sub.add_parser('run', help='forward pass on a raw RGB image')
    r.add_argument('--weights', required=True)
    r.add_argument('--image', required=True)
    r.add_argument('--size', type=int, required=True)
    r.add_argument('--out', required=True)
    r.add_argument('--from', choices=['lavis', 'hf'], default='lavis')
    r.add_argument('--ln-vision-eps', type=float, default=None)
    r.add_argument('--dtype', choices=['float64', 'float32'], default='float64',
                   help='float32 shows how much of a difference plain f32 rounding explains')
    r.add_argument('--f16-patch', action='store_true',
                   help='round pixels and patch kernel to f16 as ggml_conv_2d does (diagnostic)')
    r.set_defaults(fn=cmd_run)
    t = sub.add_parser('selftest', help='check the reference against torch.nn.functional and its two weight sets')
    t.add_argument('--weights', required=True)
    t.set_defaults(fn=cmd_selftest)
    z = sub.add_parser('resize', help="PIL convert('RGB') + bicubic resize, raw RGB out")
    z.add_argument('--image', required=True)
    z.add_argument('--size', type=int, default=224)
    z.add_argument('--out', required=True)
    z.set_defaults(fn=cmd_resize)
    b = sub.add_parser('bench', help='time the float32 forward at a given config (extrapolated in ViT depth)')
    b.add_argument('--config', required=True)
    b.add_argument('--threads', type=int, default=2)
    b.add_argument('--runs', type=int, default=2)
    b.set_defaults(fn=cmd_bench)
    args = p.parse_args(argv)
    if args.cmd != 'bench':
        torch.set_num_threads(1)
    args.fn(args)


if __name__ == '__main__':
    main()
