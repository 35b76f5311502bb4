#!/usr/bin/env bash
# Reference runs whose pixels must not change through a refactor (see tools/output_hashes.py).
#   bash tools/reference_runs.sh OUTDIR   ->  OUTDIR/hashes.json
set -euo pipefail
OUT=${1:?usage: tools/reference_runs.sh OUTDIR}
BENCH=${BENCH:-../shared/benchmarks}
S=${STFUSE:-.venv/bin/stfuse}
rm -rf "$OUT"; mkdir -p "$OUT"
$S predict -q -o "$OUT/demo" --format cog,zarr
$S predict -q -o "$OUT/auto" --method auto --start 2023-06-10 --end 2023-06-12
$S predict -q -o "$OUT/estarfm-tiled" --method estarfm --tile 128 --start 2023-06-14 --end 2023-06-15 --format zarr
$S predict -q -o "$OUT/scaled" --start 2023-06-20 --end 2023-06-20 --variance-scale 1.3
$S predict -q -o "$OUT/hybrid" --method auto --refine shipped --start 2023-06-08 --end 2023-06-08
$S predict -q -o "$OUT/hybrid1" --method auto --refine shipped --max-pairs 1 --start 2023-07-30 --end 2023-07-30
$S evaluate -q --holdout -o "$OUT/holdout" > /dev/null
if [ -d "$BENCH" ]; then
  mkdir -p "$OUT/tasks"
  for t in estarfm-real-1pair-early estarfm-real-2pair starfm-sim-test1; do
    for m in starfm auto fsdaf fitfc; do
      $S evaluate -q --task $t --benchmarks "$BENCH" --method $m -o "$OUT/tasks/${t}_$m.tif" > /dev/null
    done
  done
  $S evaluate -q --task estarfm-real-2pair --benchmarks "$BENCH" --method estarfm -o "$OUT/tasks/2pair_estarfm.tif" > /dev/null
  $S evaluate -q --task estarfm-real-1pair-late --benchmarks "$BENCH" --method auto --refine shipped -o "$OUT/tasks/late_hybrid.tif" > /dev/null
  $S predict -q --pair "$BENCH/estarfm-real/landsat_2001-05-24.tif" "$BENCH/estarfm-real/modis_2001-05-24.tif" \
     --coarse "$BENCH/estarfm-real/modis_2001-07-11.tif" --variance-scale 1.3 -o "$OUT/tasks/local_scaled.tif"
fi
.venv/bin/python tools/output_hashes.py "$OUT" > "$OUT.hashes.json"
echo "hashes: $OUT.hashes.json ($(grep -c ':' "$OUT.hashes.json") entries)"
