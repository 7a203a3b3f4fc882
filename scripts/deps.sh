#!/usr/bin/env bash
# Installs the real components the tests start (a throwaway PostgreSQL;
# headless Chromium for the inspector's browser test), when they are
# missing: with apt-get when running as root on Debian, otherwise it says
# what to install. Under CI=true a component that stays missing fails (a
# skipped test there would be a test that cannot fail).
set -euo pipefail

missing=()
have_postgres() {
  command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null
}
have_postgres || missing+=(postgresql)
have_chromium() {
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]
}
have_chromium || missing+=(chromium)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

echo "deps: missing ${missing[*]}: install with: sudo apt-get install -y ${missing[*]}" >&2
if [ "${CI:-}" = "true" ]; then
  echo "deps: CI=true, so the tests that need them cannot be skipped" >&2
  exit 1
fi
echo "deps: the tests that need them will be skipped" >&2
