#!/usr/bin/env bash
# A verifiers v1 venv: the v1 envs' dependencies and the prime CLI 0.18.0, apart from the project's .venv
# because verifiers 0.1.x (v0 envs, SV-Bench) and the v1 API cannot share one. tests/test_hosted_v1*.py run the
# v1 envs and the prime CLI's client-side checks in it; `make test` builds it first.
#
#   bash scripts/build_v1_venv.sh [--verifiers newest|oldest]           build it once (cached; prints its folder)
#   bash scripts/build_v1_venv.sh [--verifiers newest|oldest] --check   print its folder if built, else exit 3
#
# The env projects admit verifiers >=0.3.1.dev62,<0.5: prime-rl's pinned git build (0.3.1.dev62, not on PyPI)
# up to the 0.4.x releases. The tests run on both ends that PyPI has: newest 0.4.0, oldest 0.3.1.
# Cached under ~/.cache/sv-soar/venv-v1-<verifiers>-<hash of the env projects' pyproject.toml and this script>,
# so an edit of either builds a fresh one. torch==2.13.0 goes first: on these machines pip takes the CPU build from
# local disk, where a bare `torch` would pull gigabytes of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CACHE=${SV_SOAR_CACHE_HOME:-$HOME/.cache/sv-soar}
NEWEST=0.4.0
OLDEST=0.3.1
WHICH=newest
CHECK=
while [ $# -gt 0 ]; do
  case "$1" in
    --verifiers) WHICH=$2; shift 2 ;;
    --check) CHECK=1; shift ;;
    *) echo "usage: $0 [--verifiers newest|oldest] [--check]" >&2; exit 2 ;;
  esac
done
case "$WHICH" in
  newest) VERIFIERS=$NEWEST ;;
  oldest) VERIFIERS=$OLDEST ;;
  *) echo "--verifiers newest|oldest, not $WHICH" >&2; exit 2 ;;
esac
KEY=$(cat environments/sv_soar_teacher_v1/pyproject.toml environments/sv_soar_student_v1/pyproject.toml \
      scripts/build_v1_venv.sh | sha256sum | cut -c1-12)
VENV=$CACHE/venv-v1-$VERIFIERS-$KEY
if [ -f "$VENV/.installed" ]; then echo "$VENV"; exit 0; fi
if [ -n "$CHECK" ]; then echo "not built: bash scripts/build_v1_venv.sh (or make test)" >&2; exit 3; fi
rm -rf "$VENV"
mkdir -p "$CACHE"
"$PYTHON" -m venv "$VENV"
trap 'rm -rf "$VENV"' ERR
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0
# the env projects' own dependencies (not the projects: tests put the working tree first on PYTHONPATH)
DEPS=$("$PYTHON" - <<'PY'
import tomllib
deps = []
for env in ("sv_soar_teacher_v1", "sv_soar_student_v1"):
    with open(f"environments/{env}/pyproject.toml", "rb") as f:
        deps += tomllib.load(f)["project"]["dependencies"]
print("\n".join(sorted(set(deps))))
PY
)
mapfile -t DEP_LIST <<<"$DEPS"
# prime: its client-side config checks; uv: verifiers' null harness runs its chat program as a uv script;
# pytest: the checks run as scripts, but the tiny model's builder is shared with the test suite
"$VENV/bin/pip" install -q "${DEP_LIST[@]}" "verifiers==$VERIFIERS" prime==0.18.0 uv pytest
touch "$VENV/.installed"
echo "$VENV"
