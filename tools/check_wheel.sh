#!/usr/bin/env bash
# A user's install, checked: build the wheel, install it into a clean venv (no checkout on its path),
# and run `stfuse predict` on the default sample from a folder outside the checkout.
#   tools/check_wheel.sh            (make wheel-check; .ci/run runs it after make test)
# Dependencies come from pip's configured indexes and wheel folders, torch pinned by constraints.txt.
# The wheel carries no sample_scenes/: the first predict generates it into $XDG_CACHE_HOME (here a
# temporary folder), as a user's first run does. Without the `report` extra, quicklook must fail with
# the install hint. Exit status 0 only if every check passes.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stfuse-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_wheel: FAIL: $*" >&2; exit 1; }
step() { echo "check_wheel: $* ($SECONDS s)"; }

step "building the wheel from a copy of the working tree (tracked and new files, not ignored ones)"
mkdir -p "$WORK/src"
git -C "$REPO" ls-files -co --exclude-standard | while IFS= read -r f; do if [ -e "$REPO/$f" ]; then printf '%s\0' "$f"; fi; done \
  | tar -C "$REPO" --null -T - -cf - | tar -C "$WORK/src" -xf -
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/stfuse-*.whl)"
CONTENTS="$("$PYTHON" -m zipfile -l "$WHEEL")"
for needed in stfuse/weights/refiner.pt stfuse/fusion/prior/variance_scales.json stfuse_cli/main.py; do
  grep -q "$needed" <<<"$CONTENTS" || fail "$needed is missing from $(basename "$WHEEL")"
done
! grep -qE "sample_scenes/|^tools/|tests/" <<<"$CONTENTS" || fail "the wheel carries checkout-only files"

step "installing $(basename "$WHEEL") into a clean venv"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet -c "$REPO/constraints.txt" "$WHEEL"
"$WORK/venv/bin/python" -c "import matplotlib" 2>/dev/null && fail "matplotlib was installed without the report extra"

step "stfuse predict on the default sample (first use generates it)"
mkdir -p "$WORK/run"
cd "$WORK/run"  # outside the checkout: nothing can come from it
env -u STFUSE_SAMPLE_DIR XDG_CACHE_HOME="$WORK/cache" \
  "$WORK/venv/bin/stfuse" predict --start 2023-06-10 --end 2023-06-11 -o out
[ -f "$WORK/cache/stfuse/sample_scenes/catalog.json" ] || fail "the sample catalog was not generated into the cache"
n=$(ls out/*.tif 2>/dev/null | wc -l)
[ "$n" -eq 2 ] || fail "expected 2 COGs in out/, found $n: $(ls out)"
"$WORK/venv/bin/python" - out/*.tif <<'EOF'
import sys

import numpy as np
import rasterio

for path in sys.argv[1:]:
    with rasterio.open(path) as src:
        assert src.overviews(1), f"{path} has no overviews: not a COG"
        assert np.isfinite(src.read(1)).mean() > 0.5, f"{path} is mostly empty"
print("COGs ok:", ", ".join(sys.argv[1:]))
EOF

step "stfuse quicklook without the report extra names the install command"
set +e
msg="$("$WORK/venv/bin/stfuse" quicklook "$(ls out/*.tif | head -1)" -o q.png 2>&1)"; rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "stfuse\[report\]" <<<"$msg" || fail "quicklook without matplotlib: exit $rc, output: $msg"

step "all checks passed"
