#!/usr/bin/python3
"""Summarises tools/bench/compare_llamacpp.sh output: every OUT/<model>.<test>.r<k>.<engine>.json
(llama-bench `-o json` or `longctx bench --json`, same field meanings) -> a markdown table with
the median tokens/s of all samples_ts per engine, min-max range, sample count, and the ratio.

  tools/bench/summarize_compare.py /tmp/longctx-compare
"""
import glob
import json
import os
import re
import statistics
import sys


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/longctx-compare"
    rows = {}  # (model, test) -> engine -> [t/s samples]
    order = []
    for path in sorted(glob.glob(os.path.join(out, "*.json")), key=os.path.getmtime):
        m = re.match(r"(.+)\.([^.]+)\.r(\d+)\.(longctx|llamacpp)\.json$", os.path.basename(path))
        if not m:
            continue
        model, test, _, engine = m.groups()
        try:
            data = json.load(open(path))
        except (json.JSONDecodeError, OSError):
            print(f"skipping unreadable {path}", file=sys.stderr)
            continue
        key = (model, test)
        if key not in rows:
            rows[key] = {}
            order.append(key)
        for t in data:
            rows[key].setdefault(engine, []).extend(t["samples_ts"])
    print("| model | test | longctx t/s (median, min–max, n) | llama.cpp t/s (median, min–max, n) | longctx / llama.cpp |")
    print("| --- | --- | ---: | ---: | ---: |")

    def cell(v):
        if not v:
            return "—", None
        med = statistics.median(v)
        return f"{med:.2f} ({min(v):.2f}–{max(v):.2f}, {len(v)})", med

    for model, test in order:
        e = rows[(model, test)]
        a, am = cell(e.get("longctx", []))
        b, bm = cell(e.get("llamacpp", []))
        ratio = f"{am / bm:.2f}×" if am and bm else "—"
        label = test.replace("p", "pp", 1) if re.match(r"p\d", test) else test
        print(f"| {model} | {label.replace('@', ' @ ')} | {a} | {b} | {ratio} |")


if __name__ == "__main__":
    main()
