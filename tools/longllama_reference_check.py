#!/usr/bin/python3
"""Checks longctx's LongLLaMA (Focused Transformer) path against the unmodified reference
implementation, CStanKonrad/long_llama `src/modeling_longllama.py` (commit bfcb8d1 was used to make
tests/data fixtures and docs/FOT.md), run in float64 as the fixtures were.

The reference is NOT part of this repository and nothing of it is copied here: it is imported
from the directory given with --ref-src (the long_llama `src/` folder holding
modeling_longllama.py, configuration_longllama.py and longllama_utils.py).

It was written for transformers 4.33. When that version is importable it is used; otherwise
(--stand-ins auto, or always) this script registers minimal in-memory stand-ins for the few
transformers names the reference imports, with the 4.33 behaviour it relies on:
  * configuration_utils.PretrainedConfig: keyword arguments become attributes; return_dict=True,
    output_attentions/output_hidden_states=False, use_return_dict property;
  * modeling_utils.PreTrainedModel: an nn.Module holding `config`; post_init() only ties lm_head
    to the input embeddings when tie_word_embeddings (weights are loaded afterwards);
  * activations.ACT2FN["silu"] = nn.SiLU();
  * modeling_outputs.{BaseModelOutputWithPast, CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast}: ModelOutput dataclasses (an OrderedDict of the non-None
    fields; int/slice indexing goes through to_tuple(), attributes always exist);
  * utils.logging.get_logger (with warning_once) and no-op docstring decorators.
With these stand-ins the reference reproduces every longllama_* fixture (tests/data/fixtures or
/work/shared/fixtures) to ~6e-8 (the float32 storage of the expected logits) and its greedy ids
exactly: run the `fixtures` command first to validate a setup.

Weights are read from model.safetensors (F32/BF16/F16, upcast exactly), the model is run with
model.double() and torch's default dtype float64. Generation is a greedy loop over forward()
with past_key_values (what model.generate does; EOS never stops it).

Commands (needs torch and numpy):
  tools/longllama_reference_check.py fixtures --ref-src LONG_LLAMA/src --fixtures DIR
  tools/longllama_reference_check.py compare --ref-src LONG_LLAMA/src --engine build/bin/longctx \
      --model HF_DIR [--ids 1,2,3 | --length L] [--last-context-length N] [--gen N --prompt-len P]
`compare` runs `longctx logits` (every position, full vocabulary) on the ids, and with --gen
`longctx generate-ids` on the first P ids plus `longctx logits --feed P` over the prompt and
the reference's continuation (the logits of every generation step). It prints the largest
absolute logit differences and exits 1 when one exceeds --tol (default: 1e-4, 5e-3 when the
model's mem_dtype is bfloat16; float16 memory: 3x the reference's own float32-vs-float64
difference, measured here) or the greedy ids differ.
"""
import argparse
import glob
import importlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch


def install_stand_ins():
    from collections import OrderedDict
    from dataclasses import dataclass, fields
    from typing import Optional, Tuple
    import logging as _logging
    from torch import nn

    def mod(name):
        m = types.ModuleType(name)
        sys.modules[name] = m
        return m

    tr = mod("transformers")
    tr.__version__ = "4.33.0-stand-in"
    act = mod("transformers.activations")

    class _Act(dict):
        def __getitem__(self, k):
            return dict.__getitem__(self, k)()
    act.ACT2FN = _Act({"silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU})

    cu = mod("transformers.configuration_utils")

    class PretrainedConfig:
        model_type = ""

        def __init__(self, **kw):
            self.return_dict = kw.pop("return_dict", True)
            self.output_hidden_states = kw.pop("output_hidden_states", False)
            self.output_attentions = kw.pop("output_attentions", False)
            self.torchscript = kw.pop("torchscript", False)
            self.tie_word_embeddings = kw.pop("tie_word_embeddings", True)
            self.problem_type = kw.pop("problem_type", None)
            self.num_labels = kw.pop("num_labels", 2)
            for k in ("bos_token_id", "pad_token_id", "eos_token_id", "architectures", "torch_dtype"):
                setattr(self, k, kw.pop(k, None))
            kw.pop("transformers_version", None)
            for k, v in kw.items():
                try:
                    setattr(self, k, v)
                except AttributeError:
                    pass

        @property
        def use_return_dict(self):
            return self.return_dict and not self.torchscript
    cu.PretrainedConfig = PretrainedConfig

    mu = mod("transformers.modeling_utils")

    class PreTrainedModel(nn.Module):
        config_class = None
        base_model_prefix = ""

        def __init__(self, config, *a, **kw):
            super().__init__()
            self.config = config

        def post_init(self):
            if getattr(self.config, "tie_word_embeddings", True):
                out, inp = self.get_output_embeddings(), self.get_input_embeddings()
                if out is not None and inp is not None:
                    out.weight = inp.weight

        def get_input_embeddings(self):
            return None

        def get_output_embeddings(self):
            return None
    mu.PreTrainedModel = PreTrainedModel

    mo = mod("transformers.modeling_outputs")

    class ModelOutput(OrderedDict):
        def __post_init__(self):
            for f in fields(self):
                v = getattr(self, f.name)
                if v is not None:
                    OrderedDict.__setitem__(self, f.name, v)

        def __getitem__(self, k):
            return dict(self.items())[k] if isinstance(k, str) else self.to_tuple()[k]

        def __setattr__(self, name, value):
            if name in self.keys() and value is not None:
                OrderedDict.__setitem__(self, name, value)
            object.__setattr__(self, name, value)

        def __setitem__(self, k, v):
            OrderedDict.__setitem__(self, k, v)
            object.__setattr__(self, k, v)

        def to_tuple(self):
            return tuple(self[k] for k in self.keys())

    T = Optional[torch.Tensor]

    @dataclass
    class BaseModelOutputWithPast(ModelOutput):
        last_hidden_state: T = None
        past_key_values: Optional[Tuple] = None
        hidden_states: Optional[Tuple] = None
        attentions: Optional[Tuple] = None

    @dataclass
    class CausalLMOutputWithPast(ModelOutput):
        loss: T = None
        logits: T = None
        past_key_values: Optional[Tuple] = None
        hidden_states: Optional[Tuple] = None
        attentions: Optional[Tuple] = None

    @dataclass
    class SequenceClassifierOutputWithPast(CausalLMOutputWithPast):
        pass
    mo.ModelOutput = ModelOutput
    mo.BaseModelOutputWithPast = BaseModelOutputWithPast
    mo.CausalLMOutputWithPast = CausalLMOutputWithPast
    mo.SequenceClassifierOutputWithPast = SequenceClassifierOutputWithPast

    ut = mod("transformers.utils")
    lg = mod("transformers.utils.logging")

    class _Logger(_logging.LoggerAdapter):
        _seen = set()

        def warning_once(self, *a, **kw):
            if str(a) not in self._seen:
                self._seen.add(str(a))
                self.warning(*a, **kw)
    lg.get_logger = lambda name=None: _Logger(_logging.getLogger(name), {})
    ut.logging = lg

    def _keep(*a, **kw):
        return lambda fn: fn
    ut.add_start_docstrings = ut.add_start_docstrings_to_model_forward = ut.replace_return_docstrings = _keep
    tr.activations, tr.configuration_utils, tr.modeling_utils = act, cu, mu
    tr.modeling_outputs, tr.utils = mo, ut


def import_reference(src, stand_ins):
    use = stand_ins == "always"
    if stand_ins == "auto":
        try:
            import transformers
            use = not transformers.__version__.startswith("4.33")
        except ImportError:
            use = True
    if use:
        for k in [k for k in sys.modules if k == "transformers" or k.startswith("transformers.")]:
            del sys.modules[k]
        install_stand_ins()
    pkg = types.ModuleType("longllama_reference")
    pkg.__path__ = [os.path.abspath(src)]
    sys.modules["longllama_reference"] = pkg
    return (importlib.import_module("longllama_reference.modeling_longllama"),
            importlib.import_module("longllama_reference.configuration_longllama"))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        raw = np.frombuffer(data[t["data_offsets"][0]:t["data_offsets"][1]], dtype=np.uint8)
        if t["dtype"] == "F32":
            a = raw.view("<f4")
        elif t["dtype"] == "F16":
            a = raw.view("<f2")
        elif t["dtype"] == "BF16":
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: unsupported dtype {t['dtype']}")
        out[name] = torch.from_numpy(a.astype(np.float64).reshape(t["shape"]))
    return out


def load_reference(M, C, model_dir, dtype=torch.float64):
    torch.set_default_dtype(dtype)
    config = C.LongLlamaConfig(**json.load(open(os.path.join(model_dir, "config.json"))))
    model = M.LongLlamaForCausalLM(config).to(dtype)
    sd = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    if "lm_head.weight" not in sd and config.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True)
    return model.eval()


@torch.no_grad()
def ref_feed(model, ids, split, lcl):
    """ids[:split] in one call, then one token per call with past_key_values; logits of all rows."""
    out = model(input_ids=torch.tensor([ids[:split]]), use_cache=split < len(ids), last_context_length=lcl)
    rows = [out.logits[0]]
    for t in ids[split:]:
        out = model(input_ids=torch.tensor([[t]]), past_key_values=out.past_key_values, use_cache=True,
                    last_context_length=lcl)
        rows.append(out.logits[0])
    return torch.cat(rows).to(torch.float64).numpy()


@torch.no_grad()
def ref_generate(model, ids, n, lcl):
    out = model(input_ids=torch.tensor([ids]), use_cache=True, last_context_length=lcl)
    gen = []
    for i in range(n):
        gen.append(int(torch.argmax(out.logits[0, -1])))
        if i + 1 < n:
            out = model(input_ids=torch.tensor([[gen[-1]]]), past_key_values=out.past_key_values,
                        use_cache=True, last_context_length=lcl)
    return gen


def cmd_fixtures(a, M, C):
    worst = 0.0
    ok_all = True
    for cdir in sorted(glob.glob(os.path.join(a.fixtures, "cases", "longllama_*"))):
        case = json.load(open(os.path.join(cdir, "case.json")))
        run = case["run"]
        model = load_reference(M, C, os.path.normpath(os.path.join(cdir, case["model_dir"])))
        lcl = run["last_context_length"] if "kwarg" in run.get("last_context_length_source", "") else None
        ids, msg = case["input_ids"], []
        for name, o in case["outputs"].items():
            exp = np.fromfile(os.path.join(cdir, o["file"]), dtype="<f4").reshape(o["shape"])
            if name == "gen_step_logits":
                n = run["generation"]["n_new"]
                gen = ref_generate(model, ids, n, lcl)
                got = ref_feed(model, ids + gen[:-1], len(ids), lcl)[len(ids) - 1:, case["expected"]["gen_vocab_ids"]]
                ok_all &= gen == case["expected"]["generated_ids"]
                msg.append(f"generated_ids equal: {gen == case['expected']['generated_ids']}")
            else:
                full = ref_feed(model, ids, len(ids), lcl)
                got = full[-1:] if name == "last_logits" else full[:, case["vocab_ids"]]
            d = float(np.abs(got - exp).max())
            worst = max(worst, d)
            ok_all &= d <= case["tolerance"]["recommended_abs"]
            msg.append(f"{name} max|diff| {d:.2e}")
        print(f"{case['name']}: " + "; ".join(msg), flush=True)
    print(f"largest difference {worst:.2e}: {'OK' if ok_all else 'MISMATCH'}")
    return 0 if ok_all else 1


def engine_logits(a, ids, extra):
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, "logits.f32")
        p = subprocess.run([a.engine, "logits", "-m", a.model, "--ids", ",".join(map(str, ids)), "--out", out]
                           + extra, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"longctx logits failed: {p.stderr.strip()}")
        return np.fromfile(out, dtype="<f4").reshape(len(ids), -1).astype(np.float64)


def cmd_compare(a, M, C):
    model = load_reference(M, C, a.model)
    cfg = model.config
    lcl = a.last_context_length
    extra = ["--last-context-length", str(lcl)] if lcl is not None else []
    rng = np.random.default_rng(a.seed)
    ids = [int(x) for x in a.ids.split(",")] if a.ids else \
        [1] + [int(x) for x in rng.integers(3, cfg.vocab_size, a.length - 1)]
    model32 = load_reference(M, C, a.model, torch.float32) if cfg.mem_dtype == "float16" and a.tol is None else None
    torch.set_default_dtype(torch.float64)
    ok = True

    def tol_for(f32_rows_fn, ref):
        if a.tol is not None:
            return a.tol
        if cfg.mem_dtype == "bfloat16":
            return 5e-3
        if model32 is not None:
            torch.set_default_dtype(torch.float32)
            d = float(np.abs(f32_rows_fn(model32) - ref).max())
            torch.set_default_dtype(torch.float64)
            return max(1e-4, 3 * d)
        return 1e-4

    ref = ref_feed(model, ids, len(ids), lcl)
    tol = tol_for(lambda m: ref_feed(m, ids, len(ids), lcl), ref)
    d = np.abs(engine_logits(a, ids, extra) - ref).max(-1)
    ok &= bool(d.max() <= tol)
    print(f"logits, {len(ids)} positions: max|diff| {d.max():.2e} (tol {tol:.1e})"
          + ("" if d.max() <= tol else f", first row over: {int(np.argmax(d > tol))}"))
    if a.gen:
        P = a.prompt_len or len(ids)
        prompt = ids[:P]
        gen = ref_generate(model, prompt, a.gen, lcl)
        p = subprocess.run([a.engine, "generate-ids", "-m", a.model, "--ids", ",".join(map(str, prompt)),
                            "-n", str(a.gen)] + extra, check=True, capture_output=True, text=True)
        eng = json.loads(p.stdout.strip().splitlines()[-1])
        ok &= eng == gen
        print(f"greedy generation, {a.gen} tokens after {P}: ids {'equal' if eng == gen else 'DIFFER'}")
        seq = prompt + gen[:-1]
        ref = ref_feed(model, seq, P, lcl)[P - 1:]
        tol = tol_for(lambda m: ref_feed(m, seq, P, lcl)[P - 1:], ref)
        d = np.abs(engine_logits(a, seq, ["--feed", str(P)] + extra)[P - 1:] - ref).max(-1)
        ok &= bool(d.max() <= tol)
        print(f"generation step logits: max|diff| {d.max():.2e} (tol {tol:.1e})"
              + ("" if d.max() <= tol else f", first step over: {int(np.argmax(d > tol))}"))
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["fixtures", "compare"])
    ap.add_argument("--ref-src", required=True, help="long_llama src/ directory (the reference)")
    ap.add_argument("--stand-ins", choices=["auto", "always", "never"], default="auto")
    ap.add_argument("--fixtures", help="fixtures directory (fixtures command)")
    ap.add_argument("--engine", default="build/bin/longctx")
    ap.add_argument("--model", help="Hugging Face LongLLaMA directory (compare command)")
    ap.add_argument("--ids", help="comma-separated token ids")
    ap.add_argument("--length", type=int, default=100, help="random ids of this length (no --ids)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--last-context-length", type=int, help="passed to both as the call argument")
    ap.add_argument("--gen", type=int, default=0, help="greedy tokens to generate")
    ap.add_argument("--prompt-len", type=int, help="prompt for --gen: the first P ids (default: all)")
    ap.add_argument("--tol", type=float, help="absolute logit tolerance (default: see above)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    M, C = import_reference(a.ref_src, a.stand_ins)
    if a.command == "fixtures":
        if not a.fixtures:
            ap.error("fixtures needs --fixtures DIR")
        return cmd_fixtures(a, M, C)
    if not a.model:
        ap.error("compare needs --model DIR")
    return cmd_compare(a, M, C)


if __name__ == "__main__":
    sys.exit(main())
