#!/usr/bin/env bash
# A two-time-point cohort on the bundled sample: the same study measured twice
# ("baseline" with a right-hepatectomy plan, "rescan" without). It is a
# reproducibility check: the rescan must give exactly the baseline's numbers,
# a target SoD change of 0 % and response "SD".
#
#   bash pipelines/sample_cohort/run.sh [OUT]            (default OUT: out/sample_cohort)
#   WORKERS=2 bash pipelines/sample_cohort/run.sh        (Dask LocalCluster of 2 workers)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-out/sample_cohort}"
liverburden batch "$here/manifest.csv" --out "$out" --workers "${WORKERS:-1}"
echo "tables in $out: studies.csv lesions.csv response.csv errors.csv (and .parquet)"
