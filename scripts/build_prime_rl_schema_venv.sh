#!/usr/bin/env bash
# A prime-rl schema venv: what `prime train validate` (prime 0.18.0, prime_cli/utils/training_compiler.py) builds
# to normalise a config -- Python 3.12 and prime-rl's own `prime-rl-configs` package at one commit -- here built
# offline from a prime-rl git checkout or git dir, with verifiers 0.4.0. tests/test_hosted_v1.py runs prime's
# schema worker on the hosted configs in every one built; prime-rl's code stays out of this repository.
#
#   bash scripts/build_prime_rl_schema_venv.sh PRIME_RL_GIT [REV]    (REV: default HEAD; prints the venv)
#
# Cached under ~/.cache/sv-soar/prime-rl-schema/<commit>. Needs uv (on PATH, or the v1 venv's) and Python 3.12
# ($PYTHON312, python3.12 on PATH, or pyenv's).
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=$1
REV=${2:-HEAD}
CACHE=${SV_SOAR_CACHE_HOME:-$HOME/.cache/sv-soar}/prime-rl-schema
COMMIT=$(git -C "$SOURCE" rev-parse "$REV^{commit}")
VENV=$CACHE/$COMMIT
if [ -f "$VENV/.installed" ]; then echo "$VENV"; exit 0; fi
if [ -z "${PYTHON312:-}" ]; then
  for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if "$candidate" -V >/dev/null 2>&1; then PYTHON312=$(command -v "$candidate"); break; fi
  done
fi
[ -n "${PYTHON312:-}" ] || { echo "no Python 3.12 (prime-rl-configs requires ~=3.12): set PYTHON312" >&2; exit 3; }
UV=${UV:-$(command -v uv || echo "$(bash scripts/build_v1_venv.sh --check)/bin/uv")}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git -C "$SOURCE" archive "$COMMIT" packages/prime-rl-configs | tar -x -C "$WORK"
rm -rf "$VENV"
mkdir -p "$CACHE"
"$UV" venv -q --python "$PYTHON312" "$VENV"
echo "torch==2.13.0" > "$WORK/constraints.txt"  # never a bare torch (gigabytes of CUDA)
"$UV" pip install -q --python "$VENV/bin/python" --constraints "$WORK/constraints.txt" \
  "$WORK/packages/prime-rl-configs" "verifiers==0.4.0"
echo "$COMMIT" > "$VENV/PRIME_RL_COMMIT"
touch "$VENV/.installed"
echo "$VENV"
