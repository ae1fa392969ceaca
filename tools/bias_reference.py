#!/usr/bin/python3
# Independent float64 check of attention_bias / mlp_bias semantics (transformers v4.49 LlamaForCausalLM):
# q/k/v/o and gate/up/down Linears add their bias after the matmul; RoPE applies to q,k after the bias.
# Usage: /usr/bin/python3 tools/bias_reference.py build/bin/longctx   (needs numpy and ../shared/fixtures;
# writes /tmp/biascheck/). Builds llama_gqa with random biases on all seven Linears, compares
# `longctx logits` (HF directory and its F32 GGUF) with a numpy forward. 2026-12-07: max abs
# logit difference 1.6e-7 (logits up to 0.49), same argmax, for both.
import json, struct, subprocess, sys, os, shutil
import numpy as np
FIX = os.environ.get("LONGCTX_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/fixtures"))
src = FIX + "/models/llama_gqa"
os.makedirs("/tmp/biascheck", exist_ok=True)
dst = "/tmp/biascheck/model"
def load(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8+n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; assert v["dtype"] == "F32"
        out[k] = np.frombuffer(b[8+n+s:8+n+e], dtype=np.float32).reshape(v["shape"]).copy()
    return out
T = load(src + "/model.safetensors")
cfg = json.load(open(src + "/config.json"))
cfg["attention_bias"] = True; cfg["mlp_bias"] = True
rng = np.random.default_rng(3)
L, H, KV, hd, E, F = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["hidden_size"], cfg["intermediate_size"]
for l in range(L):
    p = f"model.layers.{l}."
    for n, d in [("self_attn.q_proj", H*hd), ("self_attn.k_proj", KV*hd), ("self_attn.v_proj", KV*hd), ("self_attn.o_proj", E),
                 ("mlp.gate_proj", F), ("mlp.up_proj", F), ("mlp.down_proj", E)]:
        T[p + n + ".bias"] = (rng.standard_normal(d) * 0.3).astype(np.float32)
os.makedirs(dst, exist_ok=True)
json.dump(cfg, open(dst + "/config.json", "w"))
hdr = {"__metadata__": {"format": "pt"}}; data = b""
for k, v in T.items():
    hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(data), len(data) + v.nbytes]}; data += v.tobytes()
hb = json.dumps(hdr).encode(); hb += b" " * ((8 - len(hb) % 8) % 8)
open(dst + "/model.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + data)
shutil.copy(FIX + "/tokenizer.model", dst)
ids = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889, 13, 2, 77, 9000, 31999, 5]
W = {k: v.astype(np.float64) for k, v in T.items()}
def rms(x, w):
    x32 = x.astype(np.float32); v = (x32 * x32).mean(-1, keepdims=True)
    return (w * (x32 * (1.0 / np.sqrt(v + np.float32(cfg["rms_norm_eps"])))).astype(np.float64))
inv = (1.0 / (np.float32(cfg["rope_theta"]) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
pos = np.arange(len(ids), dtype=np.float32)
ang = np.outer(pos, inv).astype(np.float32); emb = np.concatenate([ang, ang], -1)
cos, sin = np.cos(emb).astype(np.float64), np.sin(emb).astype(np.float64)
def rot(x):  # x [n, heads, hd]
    x1, x2 = x[..., :hd//2], x[..., hd//2:]
    return x * cos[:, None, :] + np.concatenate([-x2, x1], -1) * sin[:, None, :]
x = W["model.embed_tokens.weight"][ids]
n = len(ids)
lin = lambda h, name: h @ W[name + ".weight"].T + W[name + ".bias"]
for l in range(L):
    p = f"model.layers.{l}."
    h = rms(x, W[p + "input_layernorm.weight"])
    q = rot(lin(h, p + "self_attn.q_proj").reshape(n, H, hd))
    k = rot(lin(h, p + "self_attn.k_proj").reshape(n, KV, hd))
    v = lin(h, p + "self_attn.v_proj").reshape(n, KV, hd)
    out = np.zeros((n, H, hd))
    for hh in range(H):
        g = hh // (H // KV)
        s = q[:, hh] @ k[:, g].T / np.sqrt(hd)
        s = s + np.triu(np.full((n, n), -np.inf), 1)
        s32 = s.astype(np.float32); s32 = np.exp(s32 - s32.max(-1, keepdims=True)); s32 /= s32.sum(-1, keepdims=True)
        out[:, hh] = s32.astype(np.float64) @ v[:, g]
    x = x + lin(out.reshape(n, H*hd), p + "self_attn.o_proj")
    h = rms(x, W[p + "post_attention_layernorm.weight"])
    gt = lin(h, p + "mlp.gate_proj"); up = lin(h, p + "mlp.up_proj")
    x = x + lin(gt / (1 + np.exp(-gt)) * up, p + "mlp.down_proj")
x = rms(x, W["model.norm.weight"])
logits = x @ W["model.embed_tokens.weight"].T
plain = None
for m in [dst]:
    subprocess.run([sys.argv[1], "logits", "-m", m, "--ids", ",".join(map(str, ids)), "--out", "/tmp/biascheck/e.f32", "-t", "1"], check=True, capture_output=True)
    e = np.fromfile("/tmp/biascheck/e.f32", dtype=np.float32).reshape(n, -1)
    print("max abs diff", np.abs(e - logits).max(), "max |logit|", np.abs(logits).max(), "argmax equal", (e.argmax(-1) == logits.argmax(-1)).all())
    subprocess.run([sys.argv[1], "convert", "-m", m, "--outtype", "f32", "-o", "/tmp/biascheck/m.gguf"], check=True, capture_output=True)
    subprocess.run([sys.argv[1], "logits", "-m", "/tmp/biascheck/m.gguf", "--ids", ",".join(map(str, ids)), "--out", "/tmp/biascheck/g.f32", "-t", "1"], check=True, capture_output=True)
    g = np.fromfile("/tmp/biascheck/g.f32", dtype=np.float32).reshape(n, -1)
    print("gguf max abs diff", np.abs(g - logits).max())
