#!/usr/bin/env bash
# Set up .venv for `make demo` / `make test`: create it if missing, install torch (CPU build unless a torch is
# already there, e.g. a CUDA build you installed), then the project (with the test extra when asked).
# Usage: scripts/bootstrap.sh [VENV_DIR] [EXTRA]     e.g. scripts/bootstrap.sh .venv test
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extra=${2:-}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating $venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
py="$venv/bin/python"

if "$py" -c "import torch" >/dev/null 2>&1; then
  echo "[bootstrap] torch $("$py" -c 'import torch; print(torch.__version__)') already installed; keeping it"
else
  # CPU torch: a local CPU wheel when the machine has one, else PyTorch's CPU index (never the multi-GB CUDA build).
  cpu_wheel=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
  echo "[bootstrap] installing CPU torch ${cpu_wheel:+from $cpu_wheel}"
  if [ -n "$cpu_wheel" ]; then
    "$py" -m pip install -q "$cpu_wheel"
  else
    "$py" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

# Reinstall the project only when pyproject.toml (or the extra) changed since the last install.
stamp="$venv/.langneurons-installed${extra:+-$extra}"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing langneurons${extra:+ [$extra]} (editable)"
  "$py" -m pip install -q -e ".${extra:+[$extra]}"
  echo "$want" > "$stamp"
fi
