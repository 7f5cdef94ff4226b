#!/usr/bin/env bash
# Install auditwatch with its test dependencies into a fresh virtual environment
# and run the test suite:   bash tests/run.sh [PYTHON] [pytest args...]
# The package is installed (not editable) because auditwatch.pth must land in
# site-packages for child processes to be audited, as it does for users.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-python3}"
shift || true
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
venv="${AUDITWATCH_TEST_VENV:-$here/.venv-test-$version}"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here[test]"
cd "$here/tests"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
