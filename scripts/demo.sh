#!/usr/bin/env bash
# The README's main command: install, build, and run the default model on a long document.
# Until the project's own trained LongLLaMA-style model lands (see the issue tracker), the
# default model is a small random-weight LongLLaMA generated here: it shows the whole pipeline
# (windowed FoT memory ingestion, streaming generation, statistics), not meaningful text.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"${JOBS:-2}"
MODEL=${MODEL:-models/generated/default}
if [ ! -f "$MODEL/config.json" ]; then
  /usr/bin/python3 tools/make_random_model.py --shape tiny-longllama --dtype f32 --out "$MODEL"
fi
DOC=models/generated/passkey_doc.txt
{
  echo "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
  for i in $(seq 1 200); do
    [ "$i" = 120 ] && echo "The pass key is 68217. Remember it. 68217 is the pass key."
    echo "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
  done
  echo "What is the pass key? The pass key is"
} > "$DOC"
build/bin/longctx info -m "$MODEL"
build/bin/longctx run -m "$MODEL" -f "$DOC" -n 16 --temp 0
