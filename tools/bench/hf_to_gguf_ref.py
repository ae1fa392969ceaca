#!/usr/bin/python3
"""Writes a LLaMA GGUF from a Hugging Face directory with llama.cpp's own `gguf-py` writer, the
way llama.cpp's `convert_hf_to_gguf.py` (class LlamaModel) does — an independent producer for
checking that longctx reads files written by llama.cpp's tooling. (convert_hf_to_gguf.py itself
needs torch and transformers, which are not installed here.)

  PYTHONPATH=$LLAMA_CPP_DIR/gguf-py /usr/bin/python3 tools/bench/hf_to_gguf_ref.py \
      HF_DIR --tokenizer tokenizer.model --outtype f32|f16 -o OUT.gguf

What it reproduces from convert_hf_to_gguf.py (llama.cpp conversion/base.py, conversion/llama.py):
  * metadata: TextModel.set_gguf_parameters (block_count, context_length, embedding_length,
    feed_forward_length, head_count, head_count_kv, rope_freq_base, layer_norm_rms_eps,
    file_type) + LlamaModel's vocab_size and rope_dimension_count (head_dim);
  * vocabulary: _set_vocab_sentencepiece (tokenizer model "llama", pre "default", pieces,
    scores, token types from the SentencePiece model; special ids via gguf.SpecialVocab);
  * tensors: llama.cpp names, q/k rows permuted by LlamaModel.permute (pairs (i, i+d/2) ->
    (2i, 2i+1)); 1-D tensors stay F32; --outtype f16 stores matrices as F16.
Quantised files (Q8_0, Q4_0) are then made with llama.cpp's `llama-quantize`.
"""
import argparse
import json
import os
import struct

import numpy as np
import gguf
from sentencepiece import SentencePieceProcessor


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        b = raw[base + v["data_offsets"][0]: base + v["data_offsets"][1]]
        if v["dtype"] == "F32":
            a = b.view(np.float32)
        elif v["dtype"] == "F16":
            a = b.view(np.float16).astype(np.float32)
        elif v["dtype"] == "BF16":
            a = (b.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{name}: unsupported dtype {v['dtype']}")
        out[name] = a.reshape(v["shape"])
    return out


def permute(w, n_head):
    # LlamaModel.permute: rows of each head reordered from HF's rotate-half layout to
    # llama.cpp's interleaved RoPE pairs.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


SUB = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
       "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
       "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
       "mlp.down_proj": "ffn_down"}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, il, rest = hf.split(".", 3)
    return f"blk.{il}.{SUB[rest[:-len('.weight')]]}.weight"


def add_vocab(w, tok_path, cfg):
    sp = SentencePieceProcessor()
    sp.LoadFromFile(tok_path)
    n_vocab = cfg.get("vocab_size") or sp.vocab_size()
    T = gguf.TokenType
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [T.UNUSED] * n_vocab
    for i in range(min(n_vocab, sp.vocab_size())):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (T.UNKNOWN if sp.IsUnknown(i) else T.CONTROL if sp.IsControl(i)
                    else T.UNUSED if sp.IsUnused(i) else T.BYTE if sp.IsByte(i) else T.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    # gguf.SpecialVocab reads bos/eos from config.json (and tokenizer_config.json when present).
    gguf.SpecialVocab(cfg["_dir"], n_vocab=len(tokens)).add_to_gguf(w)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir")
    ap.add_argument("--tokenizer", help="tokenizer.model (default: HF_DIR/tokenizer.model)")
    ap.add_argument("--outtype", choices=["f32", "f16"], default="f32")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()

    cfg = json.load(open(os.path.join(a.hf_dir, "config.json")))
    cfg["_dir"] = a.hf_dir
    st = load_safetensors(os.path.join(a.hf_dir, "model.safetensors"))
    n_head, n_head_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(os.path.basename(os.path.normpath(a.hf_dir)))
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if a.outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(head_dim)
    if cfg.get("rope_scaling"):
        raise SystemExit("this reference writer covers plain RoPE only")
    add_vocab(w, a.tokenizer or os.path.join(a.hf_dir, "tokenizer.model"), cfg)

    for hf, x in st.items():
        name = gguf_name(hf)
        if name.endswith("attn_q.weight"):
            x = permute(x, n_head)
        elif name.endswith("attn_k.weight"):
            x = permute(x, n_head_kv)
        x = np.ascontiguousarray(x, dtype=np.float32)
        w.add_tensor(name, x if (x.ndim == 1 or a.outtype == "f32") else x.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", a.out)


if __name__ == "__main__":
    main()
