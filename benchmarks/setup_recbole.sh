#!/usr/bin/env bash
# Create benchmarks/.venv-recbole with RecBole 1.2.1 and the pins it needs to run
# on a current Python/torch (each pin is explained in benchmarks/README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-recbole"
python="${PYTHON:-python3}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import recbole, torch; assert recbole.__version__ == '1.2.1'" 2>/dev/null; then
  echo "RecBole venv ready: $venv"
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade "pip" "setuptools<81" wheel
"$venv/bin/pip" install -q "torch==2.13.0"
"$venv/bin/pip" install -q "recbole==1.2.1" "numpy<2" "pandas<2" "setuptools<81"
"$venv/bin/python" -c "import recbole, torch, numpy, pandas; print('recbole', recbole.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__)"
