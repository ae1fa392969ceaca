"""A small LongLLaMA (Focused Transformer) model in PyTorch, written for training, with the
inference semantics of longctx / the reference `modeling_longllama.py` (see docs/FOT.md):

* LLaMA blocks: RMSNorm (eps 1e-6), rotate-half RoPE (theta 10000), SwiGLU MLP, no biases,
  untied lm_head.
* A document is cut into *chunks* (windows of `max_position_embeddings`, then the last
  `last_context_length` tokens plus whatever is generated after them, exactly as the reference's
  `_handle_long_input` and generation do). RoPE positions restart at 0 in every chunk.
* Non-memory layers attend causally inside the token's own chunk only.
* Memory layers attend, with one softmax, to the causal keys of their own chunk (rotated at their
  local positions) and to the keys of all earlier chunks of the same document (the memory;
  keys rotated as at position 0 = not rotated, `mem_positionals: true`), and -- in training --
  to the keys of other documents of the batch (FoT cross-batch negatives, also unrotated).

Layer-major evaluation: all chunks of a document go through a layer at once, with masks, which
equals the reference's window-by-window loop because a memory layer at chunk c only reads keys
and values of chunks < c computed by the same layer. Gradients flow into the memory (as in FoT's
training, where the previous contexts are part of the same forward pass).
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class FotConfig:
    vocab_size: int = 2000
    n_embd: int = 256
    n_layer: int = 6
    n_head: int = 4
    n_ff: int = 688
    window: int = 64              # max_position_embeddings: the local context of one chunk
    last_context_length: int = 32  # tokens of a prompt's end kept in the local cache
    mem_layers: list = field(default_factory=lambda: [3])
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def head_dim(self):
        return self.n_embd // self.n_head


def split_chunks(n_prompt, n_total, window, lcl):
    """Chunk id and local position of each of n_total tokens when the first n_prompt are a
    prompt: windows of `window` over the first max(0, n_prompt - lcl) tokens, then one chunk with
    the rest (the prompt's last lcl tokens and the n_total - n_prompt generated ones) --
    `_handle_long_input` followed by cached generation (which must not overflow the window)."""
    head = max(0, n_prompt - lcl)
    cid, lpos = [], []
    for t in range(head):
        cid.append(t // window)
        lpos.append(t % window)
    c_last = (head + window - 1) // window
    for i, t in enumerate(range(head, n_total)):
        cid.append(c_last)
        lpos.append(i)
    assert n_total - head <= window, "final chunk longer than the window"
    return cid, lpos


def rms_norm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, cfg, is_mem):
        super().__init__()
        d, f = cfg.n_embd, cfg.n_ff
        self.is_mem = is_mem
        self.input_layernorm = nn.Parameter(torch.ones(d))
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.post_attention_layernorm = nn.Parameter(torch.ones(d))
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)


class FotModel(nn.Module):
    def __init__(self, cfg: FotConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList([Block(cfg, i in cfg.mem_layers) for i in range(cfg.n_layer)])
        self.norm = nn.Parameter(torch.ones(cfg.n_embd))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        hd = cfg.head_dim
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        self.register_buffer("inv_freq", inv.float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        std = 0.02
        for n, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=std)
                if n.endswith(("o_proj.weight", "down_proj.weight")):
                    p.data.mul_(1.0 / math.sqrt(2 * self.cfg.n_layer))

    def forward(self, ids, cid, lpos, valid, neg_src=None, use_neg=None):
        """ids, cid, lpos: [B, P] long; valid: [B, P] bool (False = padding).
        neg_src: [B] bool, documents whose tokens every document with use_neg ([B] bool) also
        sees in its memory layers (cross-batch negatives). Returns logits [B, P, n_vocab]."""
        cfg = self.cfg
        B, P = ids.shape
        H, hd = cfg.n_head, cfg.head_dim
        scale = 1.0 / math.sqrt(hd)
        ang = lpos.float()[..., None] * self.inv_freq  # [B, P, hd/2]
        ang = torch.cat((ang, ang), dim=-1)
        cos, sin = ang.cos()[:, None], ang.sin()[:, None]  # [B, 1, P, hd]
        ar = torch.arange(P, device=ids.device)
        same = cid[:, :, None] == cid[:, None, :]
        causal = ar[None, :, None] >= ar[None, None, :]
        vk = valid[:, None, :]
        m_local = (same & causal & vk)[:, None]  # [B, 1, P(q), P(k)]
        m_mem = ((cid[:, None, :] < cid[:, :, None]) & vk)[:, None]
        have_neg = neg_src is not None and bool(neg_src.any()) and bool(use_neg.any())

        x = self.embed_tokens(ids)  # [B, P, n_embd]
        for layer in self.layers:
            h = rms_norm(x, layer.input_layernorm, cfg.rms_eps)
            q = layer.q_proj(h).view(B, P, H, hd).transpose(1, 2)  # [B, H, P, hd]
            k = layer.k_proj(h).view(B, P, H, hd).transpose(1, 2)
            v = layer.v_proj(h).view(B, P, H, hd).transpose(1, 2)
            qr = q * cos + rotate_half(q) * sin
            kr = k * cos + rotate_half(k) * sin
            s = (qr @ kr.transpose(-1, -2)).float() * scale  # [B, H, P, P]
            if layer.is_mem:
                s_mem = (qr @ k.transpose(-1, -2)).float() * scale
                s = torch.where(m_local, s, torch.where(m_mem, s_mem, torch.full_like(s, -1e9)))
                if have_neg:
                    kn = k[neg_src].transpose(0, 1).reshape(H, -1, hd)  # [H, N*P, hd]
                    vn = v[neg_src].transpose(0, 1).reshape(H, -1, hd)
                    mn = valid[neg_src].reshape(-1)  # [N*P]
                    s_neg = torch.einsum("bhqd,hkd->bhqk", qr, kn).float() * scale
                    ok = mn[None, None, None, :] & use_neg[:, None, None, None]
                    s_neg = torch.where(ok, s_neg, torch.full_like(s_neg, -1e9))
                    p = torch.softmax(torch.cat((s, s_neg), dim=-1), dim=-1).to(v.dtype)
                    o = p[..., :P] @ v + torch.einsum("bhqk,hkd->bhqd", p[..., P:], vn)
                else:
                    o = torch.softmax(s, dim=-1).to(v.dtype) @ v
            else:
                s = torch.where(m_local, s, torch.full_like(s, -1e9))
                o = torch.softmax(s, dim=-1).to(v.dtype) @ v
            x = x + layer.o_proj(o.transpose(1, 2).reshape(B, P, H * hd))
            h = rms_norm(x, layer.post_attention_layernorm, cfg.rms_eps)
            x = x + layer.down_proj(F.silu(layer.gate_proj(h)) * layer.up_proj(h))
        return self.lm_head(rms_norm(x, self.norm, cfg.rms_eps))

    # ---- Hugging Face export -------------------------------------------------------------
    def hf_tensors(self):
        """(name, float32 numpy array) in the LongLLaMA / LLaMA Hugging Face naming."""
        out = [("model.embed_tokens.weight", self.embed_tokens.weight)]
        for i, l in enumerate(self.layers):
            p = f"model.layers.{i}."
            out += [(p + "input_layernorm.weight", l.input_layernorm),
                    (p + "self_attn.q_proj.weight", l.q_proj.weight),
                    (p + "self_attn.k_proj.weight", l.k_proj.weight),
                    (p + "self_attn.v_proj.weight", l.v_proj.weight),
                    (p + "self_attn.o_proj.weight", l.o_proj.weight),
                    (p + "post_attention_layernorm.weight", l.post_attention_layernorm),
                    (p + "mlp.gate_proj.weight", l.gate_proj.weight),
                    (p + "mlp.up_proj.weight", l.up_proj.weight),
                    (p + "mlp.down_proj.weight", l.down_proj.weight)]
        out += [("model.norm.weight", self.norm), ("lm_head.weight", self.lm_head.weight)]
        return [(n, t.detach().float().cpu().numpy()) for n, t in out]

    def hf_config(self, torch_dtype="float16"):
        c = self.cfg
        return {
            "architectures": ["LongLlamaForCausalLM"], "model_type": "longllama",
            "vocab_size": c.vocab_size, "hidden_size": c.n_embd, "intermediate_size": c.n_ff,
            "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
            "num_key_value_heads": c.n_head, "max_position_embeddings": c.window,
            "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_theta, "rope_scaling": None,
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
            "torch_dtype": torch_dtype, "mem_layers": list(c.mem_layers), "mem_positionals": True,
            "mem_dtype": "float32", "mem_attention_grouping": None,
            "last_context_length": c.last_context_length, "torch_attention": False,
        }
