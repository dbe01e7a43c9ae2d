#!/usr/bin/env bash
# The GPU path proven in one command (the same checks on the CPU where there is no GPU).
# On a bare GPU machine with only this tree: pure-Python packages missing there travel as
# wheels in .whl/ (docs/development.md); they are installed into /tmp/site first.
# Writes its files to $OUT (else a new Results/device_check/<date_time>/); the last line is
# `device check: K/N checks passed on <device>`.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PYTHON" bench/device_check.py "$@"
