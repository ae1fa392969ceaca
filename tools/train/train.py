#!/usr/bin/python3
"""Trains longctx-fot-tiny, a small LongLLaMA (Focused Transformer memory) model, and exports it in
Hugging Face format for longctx. See docs/TRAINING.md.

  /usr/bin/python3 tools/train/prepare_data.py --out .train            # corpus + tokenizer
  /usr/bin/python3 tools/train/train.py --data .train --out models/longctx-fot-tiny --device cuda
  /usr/bin/python3 tools/train/train.py --smoke --out /tmp/smoke --longctx build/bin/longctx

FoT training (Tworkowski et al. 2023, "Focused Transformer: Contrastive Training for Context
Scaling"): every document is cut into the windows longctx will use at inference; the memory
layer of a window sees the previous windows of the same document (positives) and, cross-batch,
all windows of `--neg` other documents of the batch (negatives), so it learns to pick the keys
that matter among many that do not. --smoke runs a few CPU steps of a tiny configuration,
exports it, and (with --longctx) checks that longctx computes the same logits.
"""
import argparse
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fot_model import FotConfig, FotModel, split_chunks  # noqa: E402
from tasks import PK_FILLER, PK_QUESTION, PK_TASK, TaskGen, pk_filler  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SMOKE_TEXT = ("The quick brown fox jumps over the lazy dog. Debian is a free operating system. "
              "This package provides documentation and manual pages. ") * 40


def log(msg):
    print(msg, flush=True)


# ---- data --------------------------------------------------------------------------------------
MAIN_MIX = [("passkey", 0.40), ("passkey_text", 0.15), ("dictionary", 0.15), ("plain", 0.30)]
NEG_MIX = [("plain", 0.5), ("filler_doc", 0.5)]


def pick(rng, mix):
    x, acc = rng.random(), 0.0
    for k, p in mix:
        acc += p
        if x < acc:
            return k
    return mix[-1][0]


def make_batch(gen, rng, cfg, n_main, n_neg, max_len, answer_weight):
    docs = []
    for i in range(n_main + n_neg):
        kind = pick(rng, MAIN_MIX if i < n_main else NEG_MIX)
        # mostly long documents (several windows in memory), some short ones
        target = max_len if (i >= n_main or rng.random() < 0.5) else rng.randint(48, max_len)
        docs.append(gen.sample(kind, target))
    P = max(len(d[0]) for d in docs)
    B = len(docs)
    ids = np.zeros((B, P), np.int64)
    cid = np.full((B, P), 10 ** 6, np.int64)
    lpos = np.zeros((B, P), np.int64)
    valid = np.zeros((B, P), bool)
    w = np.zeros((B, P), np.float32)  # loss weight of predicting token t+1 at t
    for b, (d, n_prompt, ans) in enumerate(docs):
        n = len(d)
        c, lp = split_chunks(min(n_prompt, n), n, cfg.window, cfg.last_context_length)
        ids[b, :n], cid[b, :n], lpos[b, :n], valid[b, :n] = d, c, lp, True
        w[b, :n - 1] = 1.0
        if ans < n:
            w[b, ans - 1:n - 1] = answer_weight
    neg = np.zeros(B, bool)
    neg[n_main:] = True
    return ids, cid, lpos, valid, w, neg, ~neg


class BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches; each DataLoader worker has its own generator seeded from the
    run's seed and the worker id, and workers are read round-robin, so a run is reproducible
    for a given --workers."""

    def __init__(self, sp, text_ids, cfg, args):
        self.sp, self.text_ids, self.cfg, self.args = sp, text_ids, cfg, args

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        a = self.args
        gen = TaskGen(self.sp, self.text_ids, a.max_len, a.seed * 1000 + wid)
        rng = random.Random(a.seed * 1000 + 500 + wid)
        while True:
            yield make_batch(gen, rng, self.cfg, a.batch, a.neg, a.max_len, a.answer_weight)


def load_text_ids(sp, corpus, limit_mb):
    if corpus and os.path.exists(corpus):
        with open(corpus) as f:
            text = f.read(int(limit_mb * 1e6))
        docs = text.split("\n\f\n")
    else:
        docs = [SMOKE_TEXT]
    out = []
    for d in docs:
        out.append(1)
        out.extend(sp.encode(d))
    return np.array(out, np.int32)


# ---- export ------------------------------------------------------------------------------------
def write_safetensors(path, tensors, dtype):
    np_dtype, st = {"f16": (np.float16, "F16"), "f32": (np.float32, "F32")}[dtype]
    header, off, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, a in tensors:
        b = np.ascontiguousarray(a.astype(np_dtype)).tobytes()
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, m in header.items():
        if name == "__metadata__":
            continue
        dt = {"F16": np.float16, "F32": np.float32}[m["dtype"]]
        a, b = m["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dt).reshape(m["shape"]).astype(np.float32)
    return out


def export(model, out_dir, tokenizer, dtype, extra=None):
    os.makedirs(out_dir, exist_ok=True)
    cfg = model.hf_config({"f16": "float16", "f32": "float32"}[dtype])
    if extra:
        cfg["longctx_training"] = extra
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), model.hf_tensors(), dtype)
    if os.path.abspath(tokenizer) != os.path.abspath(os.path.join(out_dir, "tokenizer.model")):
        shutil.copyfile(tokenizer, os.path.join(out_dir, "tokenizer.model"))


def load_exported(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    cfg = FotConfig(vocab_size=c["vocab_size"], n_embd=c["hidden_size"], n_layer=c["num_hidden_layers"],
                    n_head=c["num_attention_heads"], n_ff=c["intermediate_size"],
                    window=c["max_position_embeddings"], last_context_length=c["last_context_length"],
                    mem_layers=list(c["mem_layers"]), rms_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"])
    model = FotModel(cfg)
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    sd = {"embed_tokens.weight": w["model.embed_tokens.weight"], "norm": w["model.norm.weight"],
          "lm_head.weight": w["lm_head.weight"]}
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        sd[f"layers.{i}.input_layernorm"] = w[p + "input_layernorm.weight"]
        sd[f"layers.{i}.post_attention_layernorm"] = w[p + "post_attention_layernorm.weight"]
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[f"layers.{i}.{n}.weight"] = w[p + f"self_attn.{n}.weight"]
        for n in ("gate_proj", "up_proj", "down_proj"):
            sd[f"layers.{i}.{n}.weight"] = w[p + f"mlp.{n}.weight"]
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    return model


@torch.no_grad()
def doc_logits(model, ids, n_prompt=None):
    """Logits [n, vocab] of one document whose first n_prompt ids are the prompt (default: all)."""
    dev = next(model.parameters()).device
    n = len(ids)
    c, lp = split_chunks(n if n_prompt is None else n_prompt, n, model.cfg.window, model.cfg.last_context_length)
    t = lambda a, dt=torch.long: torch.tensor([a], dtype=dt, device=dev)  # noqa: E731
    return model(t(ids), t(c), t(lp), t([True] * n, torch.bool))[0].float()


def check_against_longctx(model_dir, longctx, n_tokens, seed, tol, n_gen=5):
    """Runs `longctx logits` on a multi-window input and compares with this forward: once as one
    prompt, once as a prompt of n_tokens - n_gen ids followed by n_gen cached decode steps
    (`--feed`, the path generation and `longctx passkey` take)."""
    model = load_exported(model_dir).eval()
    g = torch.Generator().manual_seed(seed)
    ids = [1] + torch.randint(3, model.cfg.vocab_size, (n_tokens - 1,), generator=g).tolist()
    worst = 0.0
    for n_prompt in (n_tokens, n_tokens - n_gen):
        ref = doc_logits(model, ids, n_prompt).numpy()
        with tempfile.TemporaryDirectory() as td:
            out = os.path.join(td, "logits.f32")
            cmd = [longctx, "logits", "-m", model_dir, "--ids", ",".join(map(str, ids)), "--out", out, "-t", "1"]
            if n_prompt < n_tokens:
                cmd += ["--feed", str(n_prompt)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            got = np.fromfile(out, np.float32).reshape(len(ids), -1)
        diff = float(np.abs(got - ref).max())
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        log(f"longctx vs torch, {n_tokens} tokens, prompt {n_prompt} (window {model.cfg.window}, "
            f"last_context_length {model.cfg.last_context_length}): max |logit diff| {diff:.2e} "
            f"(logit range {float(np.abs(ref).max()):.1f}), argmax agreement {agree:.3f}")
        if diff > tol:
            raise SystemExit(f"longctx logits differ from the training forward by {diff} > {tol}")
        worst = max(worst, diff)
    return worst


# ---- quick passkey check in torch ----------------------------------------------------------------
@torch.no_grad()
def torch_passkey(model, sp, length, trials, seed):
    """The `longctx passkey` prompt at about `length` tokens, greedy, exact match (for the log)."""
    rng = random.Random(seed)
    ft = len(sp.encode(" ".join(PK_FILLER))) / 5.0
    ok = 0
    for t in range(trials):
        key = str(rng.randint(10000, 49999))
        n = max(0, int((length - 70) / ft))
        kb = round((t / max(1, trials - 1)) * n)
        prompt = (PK_TASK + "\n" + pk_filler(kb) + "\n" + f"The pass key is {key}. Remember it. {key} is the pass key."
                  + "\n" + pk_filler(n - kb) + "\n" + PK_QUESTION)
        ids = [1] + sp.encode(prompt)
        want = sp.encode(key)
        n_prompt = len(ids)
        for _ in range(len(want)):
            ids.append(int(doc_logits(model, ids, n_prompt)[-1].argmax()))
        ok += ids[n_prompt:] == want
    return ok / trials


# ---- training ----------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(REPO, ".train"), help="folder with corpus.txt and tokenizer.model")
    ap.add_argument("--tokenizer", default=None, help="default: DATA/tokenizer.model")
    ap.add_argument("--out", required=True, help="Hugging Face model folder to write")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--time-budget", type=float, default=0, help="seconds; >0 caps --steps from the measured speed")
    ap.add_argument("--batch", type=int, default=48, help="documents per step")
    ap.add_argument("--neg", type=int, default=8, help="cross-batch negative documents per step")
    ap.add_argument("--max-len", type=int, default=256, help="training context: longest document in tokens")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--answer-weight", type=float, default=4.0)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-ff", type=int, default=688)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--last-context-length", type=int, default=32)
    ap.add_argument("--mem-layers", default="3")
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16", help="exported weights")
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-lengths", default="1,4,16", help="torch passkey check lengths, x max-len")
    ap.add_argument("--workers", type=int, default=0, help="data-generating processes")
    ap.add_argument("--final-eval-lengths", default="", help="torch passkey check after training, x max-len")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="a few CPU steps of a tiny model (CI)")
    ap.add_argument("--longctx", default=None, help="longctx binary: check its logits against this forward")
    ap.add_argument("--check-only", action="store_true", help="only compare --out with longctx")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.check_only:
        check_against_longctx(args.out, args.longctx, 3 * args.window + 40 if args.window else 232, args.seed, 2e-3)
        return
    if args.smoke:
        args.n_embd, args.n_layer, args.n_head, args.n_ff = 32, 3, 2, 64
        args.window, args.last_context_length, args.mem_layers = 16, 8, "1"
        args.max_len, args.batch, args.neg, args.steps = 64, 4, 2, 3
        args.save_every = args.eval_every = 0
        args.dtype = "f32"
    tok = args.tokenizer or os.path.join(args.data, "tokenizer.model")
    if args.smoke and not os.path.exists(tok):
        tok = os.path.join(REPO, "models", "longctx-fot-tiny", "tokenizer.model")
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tok)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    cfg = FotConfig(vocab_size=sp.get_piece_size(), n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
                    n_ff=args.n_ff, window=args.window, last_context_length=args.last_context_length,
                    mem_layers=[int(x) for x in args.mem_layers.split(",") if x != ""])
    dev = torch.device(args.device)
    model = FotModel(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters, {cfg}")

    t0 = time.time()
    corpus = None if args.smoke else os.path.join(args.data, "corpus.txt")
    text_ids = load_text_ids(sp, corpus, 12.0)
    log(f"corpus: {len(text_ids)} tokens ({time.time() - t0:.1f} s)")
    dl_kw = {"num_workers": args.workers, "prefetch_factor": 4} if args.workers else {}
    loader = iter(torch.utils.data.DataLoader(BatchStream(sp, text_ids, cfg, args), batch_size=None, **dl_kw))

    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    use_amp = dev.type == "cuda"
    total = args.steps
    warm = max(1, min(200, total // 10))
    t_start = time.time()
    step = 0
    meta = {"seed": args.seed, "batch": args.batch, "neg": args.neg, "max_len": args.max_len, "lr": args.lr}
    while step < total:
        if args.time_budget > 0 and step == 30:
            rate = 30 / (time.time() - t_start)
            total = min(args.steps, max(60, int(rate * args.time_budget)))
            log(f"speed {rate:.1f} steps/s -> {total} steps in the {args.time_budget:.0f} s budget")
        lr = args.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, cid, lpos, valid, w, neg, use_neg = (torch.as_tensor(a).to(dev, non_blocking=True)
                                                  for a in next(loader))
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(ids, cid, lpos, valid, neg, use_neg)
        nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1),
                              reduction="none").view(ids.shape[0], -1)
        wt = w[:, :-1]
        loss = (nll * wt).sum() / wt.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == total or args.smoke:
            with torch.no_grad():
                am = wt > 1.0
                acc = ((logits[:, :-1].argmax(-1) == ids[:, 1:]) & am).sum().item() / max(1, am.sum().item())
                ans_nll = (nll * am).sum().item() / max(1, am.sum().item())
            log(f"step {step}/{total} loss {loss.item():.4f} answer-nll {ans_nll:.4f} answer-acc {acc:.3f} "
                f"lr {lr:.2e} {time.time() - t_start:.0f}s")
        if args.eval_every and step % args.eval_every == 0:
            model.eval()
            r = {L: torch_passkey(model, sp, L, 10, 7) for L in
                 [int(float(x) * args.max_len) for x in args.eval_lengths.split(",")]}
            model.train()
            log(f"step {step} torch passkey " + " ".join(f"{k}:{v:.2f}" for k, v in r.items()))
        if args.save_every and step % args.save_every == 0:
            meta.update(steps=step, seconds=round(time.time() - t_start))
            export(model, args.out, tok, args.dtype, meta)
            log(f"saved {args.out} at step {step}")
    meta.update(steps=step, seconds=round(time.time() - t_start), device=str(dev))
    export(model, args.out, tok, args.dtype, meta)
    log(f"done: {step} steps in {time.time() - t_start:.0f} s -> {args.out}")
    if args.final_eval_lengths:
        model.eval()
        for x in args.final_eval_lengths.split(","):
            L = int(float(x) * args.max_len)
            log(f"final torch passkey {x}x = {L} tokens: {torch_passkey(model, sp, L, 20, 99):.2f}")
    if args.longctx:
        check_against_longctx(args.out, args.longctx, 3 * cfg.window + 20, args.seed, 2e-3 if args.dtype == "f32" else 5e-2)
        if args.smoke:
            # Near-initial weights attend almost uniformly, which would hide a wrong RoPE or mask:
            # check again with sharp attention (q, k scaled up) so positions and memory matter.
            with torch.no_grad():
                for layer in model.layers:
                    layer.q_proj.weight.mul_(20.0)
                    layer.k_proj.weight.mul_(20.0)
            sharp = args.out.rstrip("/") + "_sharp"
            export(model, sharp, tok, "f32")
            check_against_longctx(sharp, args.longctx, 3 * cfg.window + 20, args.seed + 1, 2e-3)


if __name__ == "__main__":
    main()
