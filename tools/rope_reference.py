#!/usr/bin/python3
"""Independent reference for tests/test_rope.cpp: RoPE inverse frequencies and attention scale
as transformers v4.49 computes them (src/transformers/modeling_rope_utils.py), re-expressed in
numpy with the same float32 / float64 split that torch applies:

* Python numbers (config values, math.log, math.floor, ...) are float64.
* `torch.arange(...).float()` and everything derived from it is float32; a Python number that
  meets a float32 tensor is first rounded to float32 (torch type promotion), except the
  exponent of `tensor ** python_float`, which torch's CPU pow kernel keeps in double
  (std::pow(float, double)).
* `python_number / tensor` is `tensor.reciprocal() * python_number` (torch Tensor.__rtruediv__).
* `python_float ** tensor` is `torch.tensor(base, float32) ** tensor`, i.e. powf(float, float);
  for the small head_dim used here torch takes the scalar (libm) path, so powf comes from libm.

Usage: /usr/bin/python3 tools/rope_reference.py   (prints C++ initialisers for the tests)
Needs only numpy (Debian python3-numpy); no torch.
"""
import ctypes
import math

import numpy as np

f32 = np.float32
_libm = ctypes.CDLL("libm.so.6")
_libm.powf.restype = ctypes.c_float
_libm.powf.argtypes = [ctypes.c_float, ctypes.c_float]


def powf(b, e):
    return f32(_libm.powf(float(f32(b)), float(f32(e))))


def exponents(dim):
    # torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return [f32(i) / f32(dim) for i in range(0, dim, 2)]


def default_inv_freq(base, dim):
    # 1.0 / (base ** exps): reciprocal of powf(float(base), e)
    return [f32(1.0) / powf(base, e) for e in exponents(dim)]


def linear(base, dim, factor):
    return [v / f32(factor) for v in default_inv_freq(base, dim)], 1.0


def dynamic(base, dim, max_pos, factor, seq_len):
    if seq_len is None or seq_len <= max_pos:
        # init path: Python floats; base * 1.0 ** x == base
        b = base * ((factor * max_pos / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        return default_inv_freq(b, dim), 1.0
    # forward path: seq_len = torch.max(position_ids) + 1 is an int64 tensor, so the whole
    # expression is float32 except the pow exponent (double inside torch's kernel).
    t = f32(factor) * f32(seq_len)
    t = t / f32(max_pos)
    t = t - f32(factor - 1)
    t = f32(math.pow(float(t), dim / (dim - 2)))
    b = f32(base) * t
    return [f32(1.0) / powf(b, e) for e in exponents(dim)], 1.0


def yarn(base, dim, max_pos, factor, beta_fast=32, beta_slow=1, attention_factor=None,
         mscale=None, mscale_all_dim=None):
    def get_mscale(scale, m=1):
        if scale <= 1:
            return 1.0
        return 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = 0.1 * math.log(factor) + 1.0

    def find_correction_dim(num_rotations):
        return (dim * math.log(max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(find_correction_dim(beta_fast)), 0)
    high = min(math.ceil(find_correction_dim(beta_slow)), dim - 1)
    lo, hi = low, high
    if lo == hi:
        hi += 0.001
    pos_freqs = [powf(base, e) for e in exponents(dim)]
    extra = [f32(1.0) / p for p in pos_freqs]
    inter = [f32(1.0) / (f32(factor) * p) for p in pos_freqs]
    out = []
    for i in range(dim // 2):
        ramp = (f32(i) - f32(lo)) / f32(hi - lo)
        ramp = min(max(ramp, f32(0.0)), f32(1.0))
        ef = f32(1.0) - ramp
        out.append(inter[i] * (f32(1.0) - ef) + extra[i] * ef)
    return out, attention_factor


def llama3(base, dim, factor, low_ff, high_ff, old_ctx):
    inv = default_inv_freq(base, dim)
    lfw = old_ctx / low_ff
    hfw = old_ctx / high_ff
    out = []
    for v in inv:
        wl = (f32(1.0) / v) * f32(2 * math.pi)          # 2*pi / inv_freq
        il = v / f32(factor) if wl > f32(lfw) else v
        sf = ((f32(1.0) / wl) * f32(old_ctx) - f32(low_ff)) / f32(high_ff - low_ff)
        sm = (f32(1.0) - sf) * il / f32(factor) + sf * il
        medium = (not (wl < f32(hfw))) and (not (wl > f32(lfw)))
        out.append(sm if medium else il)
    return out, 1.0


def longrope(base, dim, max_pos, orig, short, long_, seq_len=None):
    factor = max_pos / orig
    att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    ext = long_ if (seq_len and seq_len > orig) else short
    return [f32(1.0) / (f32(e) * powf(base, x)) for e, x in zip(ext, exponents(dim))], att


def hexf(v):
    # Shortest exact C++ hex-float literal of a float32 value.
    h = float(f32(v)).hex()
    mant, exp = h.split("p")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{exp}f"


def cpp(name, vals, att):
    body = ", ".join(hexf(v) for v in vals)
    print(f"// {name}\n{{{{{body}}}, {hexf(att)}}},")


if __name__ == "__main__":
    theta_ntk = 10000.0 * 8 ** (8 / 6)  # fixture h_rope_theta_ntk: rope_theta in config.json
    print(f"// theta_ntk = {theta_ntk!r}")
    cpp("default d16 theta 1e4", default_inv_freq(10000.0, 16), 1.0)
    cpp("default d8 theta_ntk (llama_rope_theta)", default_inv_freq(theta_ntk, 8), 1.0)
    cpp("linear d16 f4 (llama_rope_linear)", *linear(10000.0, 16, 4.0))
    cpp("dynamic d8 f2 max32 seq20", *dynamic(10000.0, 8, 32, 2.0, 20))
    for s in (33, 48, 80, 1000):
        cpp(f"dynamic d8 f2 max32 seq{s} (llama_rope_dynamic)", *dynamic(10000.0, 8, 32, 2.0, s))
    cpp("yarn d16 f4 max32 (llama_rope_yarn)", *yarn(10000.0, 16, 32, 4.0))
    cpp("yarn d64 f8 max4096 bf16 bs2 theta5e5", *yarn(500000.0, 64, 4096, 8.0, 16, 2))
    cpp("yarn d16 f4 max32 mscale 0.707/1 (deepseek-style)",
        *yarn(10000.0, 16, 32, 4.0, mscale=0.707, mscale_all_dim=1.0))
    cpp("llama3 d16 f8 lff1 hff4 orig32 (llama_rope_llama3)", *llama3(10000.0, 16, 8.0, 1.0, 4.0, 32))
    cpp("llama3 d64 f8 lff1 hff4 orig8192 theta5e5", *llama3(500000.0, 64, 8.0, 1.0, 4.0, 8192))
    sf, lf = [1.0, 1.25, 1.5, 2.0], [1.0, 2.0, 4.0, 8.0]
    cpp("longrope d8 max128 orig32 short (llama_rope_longrope)", *longrope(10000.0, 8, 128, 32, sf, lf))
    cpp("longrope d8 max128 orig32 long (seq 33, newer transformers)",
        *longrope(10000.0, 8, 128, 32, sf, lf, 33))
