#!/usr/bin/env bash
# Builds the openwrk binary for a release: `cargo build --release --locked`,
# one target at a time, copied to <out>/openwrk-<target>[.exe] (the names
# `cargo xtask bundle --openwrk-bin-dir` expects).
#
# How the five targets get built: on native runners. The release workflow
# (.github/workflows/release.yml) runs this script once per target on a runner
# of that OS and CPU (ubuntu-latest, ubuntu-24.04-arm, macos-13, macos-14,
# windows-latest), so each binary comes from its platform's own toolchain and
# linker: no cross, no cargo-zigbuild, no Docker. Locally, build the host
# target with --host-only. Another --target is built with
# `cargo build --target <triple>` and needs that target's standard library
# (`rustup target add <triple>`) and a linker for it.
#
# usage: ci/build.sh [--host-only | --target ID]... [--out DIR] [--dry-run]
#   --host-only   only this machine's target (the default is all five)
#   --target ID   linux-x64 | linux-arm64 | darwin-x64 | darwin-arm64 | windows-x64 (repeatable)
#   --out DIR     where the binaries go (default: target/openwrk-bin)
#   --dry-run     print the build commands, build nothing
set -euo pipefail

ALL_TARGETS="linux-x64 linux-arm64 darwin-x64 darwin-arm64 windows-x64"

die() {
  printf 'error: %s\n' "$1" >&2
  if [ $# -gt 1 ]; then printf 'hint: %s\n' "$2" >&2; fi
  exit "${3:-1}"
}

usage() {
  sed -n '/^# usage:/,/^set -euo/{/^set/d; s/^# \{0,1\}//; p;}' "$0"
}

abs() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

triple_of() {
  case "$1" in
    linux-x64) echo x86_64-unknown-linux-gnu ;;
    linux-arm64) echo aarch64-unknown-linux-gnu ;;
    darwin-x64) echo x86_64-apple-darwin ;;
    darwin-arm64) echo aarch64-apple-darwin ;;
    windows-x64) echo x86_64-pc-windows-msvc ;;
    *) return 1 ;;
  esac
}

# The target id of this machine (SPEC §1), from uname.
host_target() {
  local os arch
  os="$(uname -s)"
  arch="$(uname -m)"
  case "$os" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    MINGW* | MSYS* | CYGWIN* | Windows_NT) os=windows ;;
    *) return 1 ;;
  esac
  case "$arch" in
    x86_64 | amd64 | AMD64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) return 1 ;;
  esac
  case "$os-$arch" in
    windows-arm64) return 1 ;;
    *) echo "$os-$arch" ;;
  esac
}

targets=()
host_only=0
dry_run=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --host-only) host_only=1 ;;
    --target)
      [ $# -gt 1 ] || die "--target needs a value" "one of: $ALL_TARGETS" 2
      targets+=("$2")
      shift
      ;;
    --target=*) targets+=("${1#--target=}") ;;
    --out)
      [ $# -gt 1 ] || die "--out needs a directory" "ci/build.sh --host-only --out target/openwrk-bin" 2
      out="$(abs "$2")"
      shift
      ;;
    --out=*) out="$(abs "${1#--out=}")" ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument \`$1\`" "run ci/build.sh --help" 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${out:-$root/target/openwrk-bin}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

host="$(host_target)" || die "this machine ($(uname -s) $(uname -m)) is not one of the release targets" "build on one of: $ALL_TARGETS"

if [ "$host_only" = 1 ]; then
  [ ${#targets[@]} -eq 0 ] || die "--host-only and --target exclude each other" "pass one of them" 2
  targets=("$host")
elif [ ${#targets[@]} -eq 0 ]; then
  read -r -a targets <<<"$ALL_TARGETS"
fi
for t in "${targets[@]}"; do
  triple_of "$t" >/dev/null || die "unknown target \`$t\`" "use one of: $ALL_TARGETS" 2
done

[ "$dry_run" = 1 ] || mkdir -p "$out"
for t in "${targets[@]}"; do
  triple="$(triple_of "$t")"
  exe=""
  if [ "$t" = windows-x64 ]; then exe=".exe"; fi
  cmd=(cargo build --release --locked --package openwrk --bin openwrk)
  if [ "$t" = "$host" ]; then
    built="$target_dir/release/openwrk$exe"
  else
    cmd+=(--target "$triple")
    built="$target_dir/$triple/release/openwrk$exe"
  fi
  dest="$out/openwrk-$t$exe"
  if [ "$dry_run" = 1 ]; then
    echo "dry run: would run: ${cmd[*]}"
    echo "dry run: would copy $built -> $dest"
    continue
  fi
  if [ "$t" != "$host" ] && command -v rustup >/dev/null &&
    ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    die "the Rust standard library for $triple ($t) is not installed" \
      "rustup target add $triple (and a linker for it), or build $t on a native runner; use --host-only for this machine ($host)"
  fi
  echo "build: $t ($triple): ${cmd[*]}"
  "${cmd[@]}" || die "cargo build for $t ($triple) failed" \
    "see the compiler output above; for a target other than this machine ($host) a linker for $triple is needed"
  [ -f "$built" ] || die "cargo reported success but $built is missing" "is CARGO_TARGET_DIR ($target_dir) right?"
  cp "$built" "$dest"
  if [ -z "$exe" ]; then chmod 0755 "$dest"; fi
  echo "build: wrote $dest ($(wc -c <"$dest" | tr -d ' ') bytes)"
done
