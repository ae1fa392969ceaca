#!/usr/bin/python3
"""Builds the offline text corpus and the SentencePiece tokenizer for longctx-fot-tiny.

  /usr/bin/python3 tools/train/prepare_data.py --out .train

Writes OUT/corpus.txt (plain text from Debian package documentation: /usr/share/doc READMEs,
changelogs, copyright files, and man pages with their troff markup stripped; one document per
block, separated by a line holding only "\\f") and OUT/tokenizer.model (SentencePiece unigram,
vocab 2000, digits split one per token as LLaMA's tokenizer does, byte fallback, no text
normalisation, BOS 1 / EOS 2 / UNK 0 as LLaMA). Deterministic: files are read in sorted order
and sampled with a fixed seed. What is installed under /usr/share differs between machines, so
the corpus (and hence the tokenizer) differs too; the committed model ships its tokenizer.
"""
import argparse
import gzip
import os
import random
import re
import sys

DOC_SEP = "\n\f\n"
# The retrieval prompts of tools/eval/tasks.cpp and of the training tasks: always in the
# tokenizer's training text so that their words become whole pieces.
TASK_TEXT = [
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.",
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
    "The pass key is 12345. Remember it. 12345 is the pass key.",
    "What is the pass key? The pass key is",
    "Below is a dictionary of key: value pairs. Memorize it; I will ask you for the value of one key.",
    "What is the value of",
    "The special magic number for apple is 1234567. What is the special magic number for apple mentioned "
    "in the provided text? The special magic number for apple mentioned in the provided text is",
]


def read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(200_000)
    except OSError:
        return None
    if b"\0" in raw[:4096]:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def strip_troff(text):
    out = []
    for line in text.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"')):
            continue  # comment
        if line.startswith("."):
            # macro line: keep the arguments of heading/font macros (.SH NAME, .B word)
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] in (".SH", ".SS", ".B", ".I", ".BR", ".IR", ".BI", ".RB", ".IP", ".TP"):
                line = parts[1].replace('"', "")
            else:
                continue
        line = re.sub(r"\\f[BIRP1-4]|\\f\(..|\\f\[[^]]*\]", "", line)
        line = re.sub(r"\\\(..|\\\[[^]]*\]", "", line)
        line = line.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\").replace("\\ ", " ")
        line = re.sub(r"\\[a-zA-Z*]", "", line)
        out.append(line)
    return "\n".join(out)


def collect(max_bytes, seed):
    files = []
    for root in ("/usr/share/doc", "/usr/share/man/man1", "/usr/share/man/man5", "/usr/share/man/man8"):
        for dirpath, _, names in os.walk(root):
            for n in names:
                if n.endswith((".html", ".png", ".svg", ".pdf", ".jpg", ".css", ".js")):
                    continue
                files.append(os.path.join(dirpath, n))
    files.sort()
    random.Random(seed).shuffle(files)
    docs, total = [], 0
    for path in files:
        t = read_text(path)
        if not t:
            continue
        if "/man/" in path:
            t = strip_troff(t)
        t = t.replace("\f", "").replace("\r", "")
        t = re.sub(r"\n{3,}", "\n\n", t).strip()
        if len(t) < 200:
            continue
        t = t[:20_000]  # no single huge changelog dominates
        docs.append(t)
        total += len(t)
        if total >= max_bytes:
            break
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-mb", type=float, default=12.0)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    docs = collect(int(args.max_mb * 1e6), args.seed)
    corpus = os.path.join(args.out, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(DOC_SEP.join(docs))
    print(f"corpus: {len(docs)} documents, {sum(map(len, docs)) / 1e6:.1f} MB -> {corpus}", file=sys.stderr)

    import sentencepiece as spm
    spm_input = os.path.join(args.out, "spm_input.txt")
    rng = random.Random(args.seed)
    with open(spm_input, "w") as f:
        for d in docs:
            for line in d.splitlines():
                if line.strip():
                    f.write(line[:2000] + "\n")
        for _ in range(200):
            for t in TASK_TEXT:
                f.write(t.replace("12345", str(rng.randint(10000, 99999))) + "\n")
    spm.SentencePieceTrainer.train(
        input=spm_input, model_prefix=os.path.join(args.out, "tokenizer"), vocab_size=args.vocab,
        model_type="unigram", split_digits=True, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=0.9995,
        input_sentence_size=400_000, shuffle_input_sentence=True, seed_sentencepiece_size=200_000,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentence_length=4096, num_threads=2,
        minloglevel=1)
    os.remove(spm_input)
    print(f"tokenizer: {os.path.join(args.out, 'tokenizer.model')}", file=sys.stderr)


if __name__ == "__main__":
    main()
