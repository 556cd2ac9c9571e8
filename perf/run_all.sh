#!/usr/bin/env bash
# Run every pyperf suite into one JSON file (default perf/results/all-DATE.json).
#   bash perf/run_all.sh [OUT.json] [pyperf options, e.g. --fast or --rigorous]
# Then: python -m pyperf stats OUT.json   (medians), or compare two files with
#       python -m pyperf compare_to OLD.json NEW.json
set -euo pipefail
cd "$(dirname "$0")/.."
out=perf/results/all-$(date +%Y%m%d).json
if [[ $# -gt 0 && $1 != -* ]]; then  # OUT given; else the arguments are all pyperf's
    out=$1
    shift
fi
mkdir -p "$(dirname "$out")"
rm -f "$out"
for suite in bench_engine bench_mixed bench_batch bench_decode bench_protocol; do
    echo "== $suite" >&2
    python perf/$suite.py --quiet --append "$out" "$@"
done
echo "wrote $out" >&2
