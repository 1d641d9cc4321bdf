#!/usr/bin/env bash
# A cohort on a Dask cluster beyond one machine.
#
#   On the scheduler host:  dask scheduler --port 8786
#   On each worker host:    NUMBA_CACHE_DIR=/shared/numba-cache dask worker tcp://SCHEDULER:8786 --nworkers 2 --nthreads 1
#   Then, anywhere:         bash pipelines/dask_cluster.sh tcp://SCHEDULER:8786 MANIFEST.csv RESULTS
#
# Paths in the manifest must resolve identically on every worker (a shared file
# system). --resume skips studies already done for the same inputs and config, so a
# re-run after a crash only does what is missing. Exit code: 0 all ok, 3 some studies
# failed (error rows in RESULTS/errors.csv), 2 invalid manifest.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 tcp://SCHEDULER:8786 MANIFEST.csv RESULTS [extra batch flags]" >&2
    exit 2
fi
scheduler="$1"; manifest="$2"; results="$3"; shift 3
exec liverburden batch "$manifest" --out "$results" --scheduler "$scheduler" --resume "$@"
