#!/usr/bin/env bash
# The README's main command: install, build, and run the default model on a long document.
# The default model is models/longctx-fot-tiny, the project's own small LongLLaMA-style model
# trained with FoT memory (docs/TRAINING.md): trained on documents of at most 256 tokens (windows
# of 64), it finds the pass key below from its FoT memory. MODEL=dir uses another model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"${JOBS:-2}"
MODEL=${MODEL:-models/longctx-fot-tiny}
mkdir -p models/generated
DOC=models/generated/passkey_doc.txt
{
  echo "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
  for i in $(seq 1 200); do
    [ "$i" = 120 ] && echo "The pass key is 68217. Remember it. 68217 is the pass key."
    echo "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
  done
  printf "%s" "What is the pass key? The pass key is"  # no newline: the model continues the line
} > "$DOC"
build/bin/longctx info -m "$MODEL"
build/bin/longctx run -m "$MODEL" -f "$DOC" -n 6 --temp 0
