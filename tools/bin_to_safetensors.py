#!/usr/bin/python3
"""Converts a Hugging Face checkpoint's PyTorch pickle weights (pytorch_model.bin, or shards
listed in pytorch_model.bin.index.json) to safetensors in the same directory, which longctx reads:

  tools/bin_to_safetensors.py /models/long_llama_3b            # writes model.safetensors
  tools/bin_to_safetensors.py /models/long_llama_code_7b       # writes model-0000i-of-0000N.safetensors + index

Needs torch (any version with torch.load; no transformers, no safetensors package). Tensors keep
their dtype (F32/F16/BF16); tied tensors are written under each name. The .bin files are left in
place. Only load pickles you trust: torch.load runs with weights_only=True where torch has it.
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def load(path):
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13: no weights_only
        sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, sd):
    header, blobs, off = {}, [], 0
    for name in sorted(sd):
        t = sd[name]
        if not torch.is_tensor(t):
            continue
        if t.dtype not in DTYPES:
            sys.exit(f"error: tensor '{name}' has dtype {t.dtype}; only float32, float16 and bfloat16 are supported "
                     "(a quantized checkpoint?)")
        b = tensor_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="model directory (config.json + pytorch_model*.bin)")
    d = ap.parse_args().dir
    index = os.path.join(d, "pytorch_model.bin.index.json")
    single = os.path.join(d, "pytorch_model.bin")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
        new_map, total = {}, 0
        for i, shard in enumerate(shards):
            out = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            sd = load(os.path.join(d, shard))
            total += write_safetensors(os.path.join(d, out), sd)
            for name, t in sd.items():
                if torch.is_tensor(t):
                    new_map[name] = out
            print(f"{shard} -> {out} ({len(sd)} tensors)")
            del sd
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(new_map.items()))}, f, indent=2)
    elif os.path.exists(single):
        sd = load(single)
        write_safetensors(os.path.join(d, "model.safetensors"), sd)
        print(f"pytorch_model.bin -> model.safetensors ({len(sd)} tensors)")
    else:
        sys.exit(f"error: no pytorch_model.bin or pytorch_model.bin.index.json in '{d}'")


if __name__ == "__main__":
    main()
