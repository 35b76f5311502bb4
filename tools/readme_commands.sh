#!/usr/bin/env bash
# Run README.md's "Command line" block top to bottom, as a new user would, in a temporary copy of the
# repository (tracked and untracked-but-not-ignored files: what a fresh clone plus this work tree holds).
# Lines ending in `\` are joined; lines whose comment says `# network` (needs the internet) or `# slow`
# (the hybrid, training: minutes) are skipped. Fails on the first command that exits non-zero.
#
#   tools/readme_commands.sh            # run (stfuse and rio from .venv/bin, else from PATH)
#   tools/readme_commands.sh --list     # only print the commands that would run, and the skipped ones
#   tools/readme_commands.sh --keep     # keep the temporary copy (its path is printed)
#
# Run by tests/test_readme_commands.py.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
readme="$repo/README.md"
list_only=0
keep=0
for arg in "$@"; do
  case "$arg" in
    --list) list_only=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "readme_commands.sh: unknown argument $arg (use --list, --keep)" >&2; exit 2 ;;
  esac
done

# The block: from the "```bash" after "## Command line" to the closing "```"; continuation lines joined.
mapfile -t commands < <(awk '
  /^## Command line/ { section = 1; next }
  section && /^```bash/ { inside = 1; next }
  inside && /^```/ { exit }
  inside {
    line = $0
    if (line ~ /\\$/) { sub(/\\$/, "", line); pending = pending line; next }
    print pending line
    pending = ""
  }
' "$readme")
if [ "${#commands[@]}" -eq 0 ]; then
  echo "readme_commands.sh: no \"## Command line\" \`\`\`bash block found in $readme" >&2
  exit 1
fi

run=()
for cmd in "${commands[@]}"; do
  [[ "$cmd" =~ ^[[:space:]]*$ ]] && continue
  if [[ "$cmd" =~ \#[[:space:]]*(network|slow) ]]; then
    echo "skip (${BASH_REMATCH[1]}): ${cmd%%#*}"
  else
    run+=("$cmd")
  fi
done
if [ "$list_only" -eq 1 ]; then
  printf 'run: %s\n' "${run[@]}"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/stfuse_readme.XXXXXX")"
if [ "$keep" -eq 1 ]; then
  echo "working copy: $work"
else
  trap 'rm -rf "$work"' EXIT
fi
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$work"
else
  tar -C "$repo" --exclude=./.venv --exclude=./out --exclude=./.git -cf - . | tar -xf - -C "$work"
fi
[ -d "$work/sample_scenes" ] || { echo "readme_commands.sh: the copy has no sample_scenes/" >&2; exit 1; }

export PATH="$repo/.venv/bin:$PATH"
cd "$work"
n=0
for cmd in "${run[@]}"; do
  n=$((n + 1))
  echo "[$n/${#run[@]}] \$ ${cmd%%#*}"
  start=$(date +%s.%N)
  if ! bash -euo pipefail -c "$cmd"; then
    echo "readme_commands.sh: README command $n failed: $cmd" >&2
    exit 1
  fi
  printf '    (%.1f s)\n' "$(echo "$(date +%s.%N) - $start" | bc)"
done
echo "readme_commands.sh: all ${#run[@]} README commands ran (skipped: network and slow lines)"
