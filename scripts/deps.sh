#!/usr/bin/env bash
# Installs the real components and tools the tests use, when they are
# missing: a throwaway PostgreSQL, headless Chromium for the inspector's
# browser test, and the compilers of the non-Go examples (clang for
# wasm32-wasi with wasi-libc for examples/c-counter and abi/include, wabt's
# wat2wasm for examples/wat-counter). With apt-get when running as root on
# Debian, otherwise it says what to install. Under CI=true a component that
# stays missing fails (a skipped test there would be a test that cannot
# fail).
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
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
# clang's wasm32 driver always links compiler-rt's builtins for wasm32.
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null || missing+=(libclang-rt-dev-wasm32)
[ -e /usr/lib/wasm32-wasi/libc.a ] || [ -e /usr/share/wasi-sysroot/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
command -v wat2wasm >/dev/null 2>&1 || missing+=(wabt)

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
