#!/usr/bin/python3
"""Writes a random-weight LLaMA or LongLLaMA checkpoint in Hugging Face format (config.json,
model.safetensors, tokenizer.model) at a real model's shape, since real weights cannot be
downloaded here. Convert it to GGUF with `longctx convert`.

  tools/make_random_model.py --shape tinyllama-1.1b --dtype f16 --out /tmp/tinyllama
  tools/make_random_model.py --shape longllama-3b --dtype bf16 --out /tmp/longllama3b

Weights are seeded normals with the fixtures' scales (q/k 0.25/sqrt(n_embd/32)... kept small
enough that activations stay finite); speed does not depend on the values.
"""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

SHAPES = {
    # name: (arch, n_embd, n_ff, n_layer, n_head, n_head_kv, n_ctx, extra)
    "tiny": ("llama", 64, 172, 2, 4, 4, 256, {}),
    "tiny-longllama": ("longllama", 64, 172, 4, 4, 4, 256,
                       {"mem_layers": [1, 3], "last_context_length": 128}),
    "tinyllama-1.1b": ("llama", 2048, 5632, 22, 32, 4, 2048, {}),
    "openllama-3b": ("llama", 3200, 8640, 26, 32, 32, 2048, {}),
    # LongLLaMA-3B: OpenLLaMA-3B with FoT memory layers 6, 12, 18 (its published config).
    "longllama-3b": ("longllama", 3200, 8640, 26, 32, 32, 2048,
                     {"mem_layers": [6, 12, 18], "last_context_length": 1024}),
}


def bf16_bytes(a):
    u = a.astype(np.float32).view(np.uint32)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u.tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f16")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(__file__), "..", "models", "tokenizer.model"))
    ap.add_argument("--mem-dtype", default="bfloat16")
    args = ap.parse_args()

    arch, n_embd, n_ff, n_layer, n_head, n_head_kv, n_ctx, extra = SHAPES[args.shape]
    head_dim = n_embd // n_head
    n_vocab = 32000
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)

    cfg = {
        "architectures": ["LongLlamaForCausalLM" if arch == "longllama" else "LlamaForCausalLM"],
        "model_type": arch, "vocab_size": n_vocab, "hidden_size": n_embd, "intermediate_size": n_ff,
        "num_hidden_layers": n_layer, "num_attention_heads": n_head, "num_key_value_heads": n_head_kv,
        "max_position_embeddings": n_ctx, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[args.dtype],
    }
    if arch == "longllama":
        cfg.update({"mem_positionals": True, "mem_dtype": args.mem_dtype, "mem_attention_grouping": None,
                    "torch_attention": False})
        cfg.update(extra)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    tensors = [("model.embed_tokens.weight", (n_vocab, n_embd), 0.02)]
    for il in range(n_layer):
        p = f"model.layers.{il}."
        tensors += [
            (p + "input_layernorm.weight", (n_embd,), None),
            (p + "self_attn.q_proj.weight", (q_dim, n_embd), 0.25 / np.sqrt(n_embd / 32)),
            (p + "self_attn.k_proj.weight", (kv_dim, n_embd), 0.25 / np.sqrt(n_embd / 32)),
            (p + "self_attn.v_proj.weight", (kv_dim, n_embd), 0.1 / np.sqrt(n_embd / 32)),
            (p + "self_attn.o_proj.weight", (n_embd, q_dim), 0.1 / np.sqrt(n_embd / 32)),
            (p + "post_attention_layernorm.weight", (n_embd,), None),
            (p + "mlp.gate_proj.weight", (n_ff, n_embd), 0.1 / np.sqrt(n_embd / 32)),
            (p + "mlp.up_proj.weight", (n_ff, n_embd), 0.1 / np.sqrt(n_embd / 32)),
            (p + "mlp.down_proj.weight", (n_embd, n_ff), 0.1 / np.sqrt(n_ff / 64)),
        ]
    tensors += [("model.norm.weight", (n_embd,), None), ("lm_head.weight", (n_vocab, n_embd), 0.05)]

    esize = 4 if args.dtype == "f32" else 2
    st_dtype = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[args.dtype]
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * esize
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    path = os.path.join(args.out, "model.safetensors")
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, std in tensors:
            if std is None:
                a = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
                data = {"f32": a.tobytes(), "f16": a.astype(np.float16).tobytes(), "bf16": bf16_bytes(a)}[args.dtype]
                f.write(data)
                continue
            # write big matrices in row blocks to bound memory
            rows = shape[0]
            step = max(1, (1 << 24) // max(1, int(np.prod(shape[1:]))))
            for r0 in range(0, rows, step):
                blk = (std * rng.standard_normal((min(step, rows - r0),) + tuple(shape[1:]), dtype=np.float32))
                if args.dtype == "f32":
                    f.write(blk.tobytes())
                elif args.dtype == "f16":
                    f.write(blk.astype(np.float16).tobytes())
                else:
                    f.write(bf16_bytes(blk))
    os.replace(path + ".tmp", path)
    if args.tokenizer and os.path.exists(args.tokenizer):
        shutil.copyfile(args.tokenizer, os.path.join(args.out, "tokenizer.model"))
    print(f"wrote {args.shape} ({arch}, {args.dtype}) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
