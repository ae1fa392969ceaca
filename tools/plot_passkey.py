#!/usr/bin/python3
"""Heat map of a `longctx passkey` / `longctx synth` JSON result: accuracy per context length
(x) and depth of the hidden fact (y), in the style of LongLLaMA's assets/plot_passkey.png.

usage: /usr/bin/python3 tools/plot_passkey.py RESULT.json OUT.png [--title TEXT]

Needs python3-matplotlib (Debian; scripts/setup.sh installs it). `longctx passkey --plot F.png`
runs this script itself.
"""
import argparse
import json
import os
import sys


def length_label(n):
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}m"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json_file")
    ap.add_argument("png_file")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: matplotlib is missing: install python3-matplotlib (scripts/setup.sh)")

    with open(args.json_file) as f:
        data = json.load(f)
    results = data.get("results", [])
    if not results:
        sys.exit(f"error: {args.json_file} has no results")
    lengths = sorted({r["length"] for r in results})
    depths = sorted({r["depth"] for r in results})
    acc = [[float("nan")] * len(lengths) for _ in depths]
    for r in results:
        acc[depths.index(r["depth"])][lengths.index(r["length"])] = r["accuracy"]

    settings = data.get("settings", {})
    model = os.path.basename(os.path.normpath(settings.get("model", "")))
    title = args.title or "{} retrieval accuracy, {}".format(settings.get("task", "passkey"), model)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 + 0.9 * len(lengths)), max(3.5, 1.5 + 0.55 * len(depths))))
    im = ax.imshow(acc, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto", origin="upper")
    ax.set_xticks(range(len(lengths)), [length_label(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("depth of the key")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            v = acc[i][j]
            if v == v:  # not NaN
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.png_file, dpi=120)
    print(f"wrote {args.png_file}", file=sys.stderr)


if __name__ == "__main__":
    main()
