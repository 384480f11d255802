#!/bin/sh
# Run every atheris harness for longer (default 300 s each), keeping the corpora.
#   fuzz/run.sh [SECONDS]
set -eu
cd "$(dirname "$0")"
seconds="${1:-300}"
for harness in frames handshake commands; do
    mkdir -p "corpus/$harness"
    cp -n "seeds/$harness/"* "corpus/$harness/"
    dict=""
    if [ -f "$harness.dict" ]; then dict="-dict=$harness.dict"; fi
    echo "== fuzz_$harness.py for ${seconds}s"
    python "fuzz_$harness.py" -max_total_time="$seconds" -print_final_stats=1 $dict "corpus/$harness"
done
