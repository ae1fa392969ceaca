#!/usr/bin/env python3
"""Writes tests/data/kquants.gguf: the oracle for longctx's reading of GGML block types.

For each type, tensor "<TYPE>.q" holds random blocks (random bytes, with the fp16 scale fields
set to moderate finite values) and "<TYPE>.f32" what gguf-py -- llama.cpp's own Python package,
an implementation independent of longctx and of ggml's C code -- dequantizes them to. The test
(tests/test_kquants.cpp) reads both through longctx and needs them to agree.

Needs numpy and llama.cpp's gguf-py (not a dependency of longctx; run by hand when adding a type):
  PYTHONPATH=$LLAMA_CPP_DIR/gguf-py python3 tools/dev/make_kquant_testdata.py tests/data/kquants.gguf
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

# type: (values per block, bytes per block, offsets of fp16 scales (positive), of fp16 mins (signed))
TYPES = {
    Q.Q8_0: (32, 34, [0], []),
    Q.Q4_0: (32, 18, [0], []),
    Q.Q4_1: (32, 20, [0], [2]),
    Q.Q5_0: (32, 22, [0], []),
    Q.Q5_1: (32, 24, [0], [2]),
    Q.Q2_K: (256, 84, [80, 82], []),
    Q.Q3_K: (256, 110, [108], []),
    Q.Q4_K: (256, 144, [0, 2], []),
    Q.Q5_K: (256, 176, [0, 2], []),
    Q.Q6_K: (256, 210, [208], []),
}


def main(out):
    rng = np.random.default_rng(20261128)
    w = gguf.GGUFWriter(out, "kquant-test")
    rows = 3
    for qt, (bv, bb, scales, mins) in TYPES.items():
        cols = 3 * bv if bv == 32 else 2 * bv  # an odd block count for the 32-value types
        nb = rows * cols // bv
        blocks = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
        for off in scales:
            v = rng.uniform(1e-3, 5e-2, size=nb).astype(np.float16)
            blocks[:, off:off + 2] = v.view(np.uint8).reshape(nb, 2)
        for off in mins:
            v = rng.uniform(-0.5, 0.5, size=nb).astype(np.float16)
            blocks[:, off:off + 2] = v.view(np.uint8).reshape(nb, 2)
        raw = blocks.reshape(rows, cols // bv * bb)
        f32 = gguf.quants.dequantize(raw, qt).astype(np.float32)
        assert f32.shape == (rows, cols), f32.shape
        w.add_tensor(qt.name + ".q", raw, raw_dtype=qt)
        w.add_tensor(qt.name + ".f32", f32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1])
