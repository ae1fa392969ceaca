#!/usr/bin/python3
"""Compares two float32 logits files [n_tokens, n_vocab] (as `longctx logits --out` and
tools/bench/llamacpp_logits.c write them) and prints one line:

  LABEL  max|diff| ...  rel ...  rmse ...  argmax a/b agree k/n

rel = max|diff| / max|reference|. With --max-abs T it exits 1 when max|diff| > T, and with
--argmax when any row's argmax differs. With --quant-ref FULL.f32 (logits of the unquantised
model) it also prints each file's RMSE against FULL and fails when the two engines differ from
each other by more than the larger of their own quantisation errors (RMSE): for a quantised
file the engines must agree better than either agrees with the unquantised model.

  tools/bench/cmp_logits.py REF.f32 TEST.f32 --vocab 32000 --label "F32 vs HF"
"""
import argparse
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("test")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--label", default="")
    ap.add_argument("--max-abs", type=float)
    ap.add_argument("--argmax", action="store_true", help="fail unless every row's argmax agrees")
    ap.add_argument("--quant-ref", help="logits of the unquantised model (see above)")
    a = ap.parse_args()
    r = np.fromfile(a.ref, dtype="<f4").reshape(-1, a.vocab).astype(np.float64)
    t = np.fromfile(a.test, dtype="<f4").reshape(-1, a.vocab).astype(np.float64)
    if r.shape != t.shape:
        sys.exit(f"{a.label}: shapes differ: {r.shape} vs {t.shape}")
    d = np.abs(r - t)
    agree = int((r.argmax(1) == t.argmax(1)).sum())
    mx = float(d.max())
    print(f"{a.label:<44} max|diff| {mx:.3e}  rel {mx / max(float(np.abs(r).max()), 1e-30):.3e}  "
          f"rmse {float(np.sqrt((d ** 2).mean())):.3e}  argmax agree {agree}/{r.shape[0]}")
    bad = (a.max_abs is not None and mx > a.max_abs) or (a.argmax and agree != r.shape[0])
    if a.quant_ref:
        f = np.fromfile(a.quant_ref, dtype="<f4").reshape(-1, a.vocab).astype(np.float64)
        e_ref, e_test = (float(np.sqrt(((x - f) ** 2).mean())) for x in (r, t))
        e_pair = float(np.sqrt((d ** 2).mean()))
        print(f"{'':<44} quantisation rmse vs unquantised: ref {e_ref:.3e}, test {e_test:.3e}; "
              f"between them {e_pair:.3e}")
        bad = bad or e_pair > max(e_ref, e_test)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
