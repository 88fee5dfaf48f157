#!/usr/bin/env bash
# The release: build openwrk, bundle dist/ with `cargo xtask bundle`, check
# it, and upload it to the GitHub release openwrk-v<version> with `gh`.
#
# usage: ci/release.sh [--dry-run] [--version V] [--out DIR] [--bin-dir DIR] [--prebuilt DIR]
#   --dry-run       build this host's target only (bundle all five when
#                   --bin-dir has them); bundle and check, never upload
#                   (prints what would be uploaded)
#   --version V     the version to release (`0.1.0`, `v0.1.0` or `openwrk-v0.1.0`);
#                   must equal Cargo.toml's (default: Cargo.toml's)
#   --out DIR       the dist directory (default: dist)
#   --bin-dir DIR   compiled openwrk-<target>[.exe] (ci/build.sh output); skips
#                   the build (env OPENWRK_BIN_DIR). A release needs all five.
#   --prebuilt DIR  openwork-server-<target>[.exe], owpenbot-<target>[.exe] and
#                   VERSION (env OPENWRK_PREBUILT_DIR). Required for a release.
#                   A dry run without it bundles the stand-in sidecars from the
#                   loopback release host (`cargo xtask repro-check --out`),
#                   offline, and so also proves the bundle reproducible.
# environment:
#   OPENCODE_VERSION      OpenCode to bundle (default: the latest release)
#   SOURCE_DATE_EPOCH     timestamp in the manifest and archives (default: the
#                         last commit's time)
#   OPENWRK_RELEASE_REPO  owner/name to upload to (default: gh's current repository)
#   GH_TOKEN              for gh (CI: the workflow's GITHUB_TOKEN)
#   XTASK                 how to run xtask (default: cargo run --locked --quiet --package xtask --)
#   OPENWRK_STANDIN_BINS  loopback dry run: already built stand-ins and openwrk (skips their build)
set -euo pipefail

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

ALL_TARGETS="linux-x64 linux-arm64 darwin-x64 darwin-arm64 windows-x64"

dry_run=0
version=""
out=""
bin_dir="${OPENWRK_BIN_DIR:-}"
prebuilt="${OPENWRK_PREBUILT_DIR:-}"
if [ -n "$bin_dir" ]; then bin_dir="$(abs "$bin_dir")"; fi
if [ -n "$prebuilt" ]; then prebuilt="$(abs "$prebuilt")"; fi
need_value() {
  [ "$2" -gt 1 ] || die "$1 needs a value" "run ci/release.sh --help" 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --version)
      need_value "$1" $#
      version="$2"
      shift
      ;;
    --version=*) version="${1#--version=}" ;;
    --out)
      need_value "$1" $#
      out="$(abs "$2")"
      shift
      ;;
    --out=*) out="$(abs "${1#--out=}")" ;;
    --bin-dir)
      need_value "$1" $#
      bin_dir="$(abs "$2")"
      shift
      ;;
    --bin-dir=*) bin_dir="$(abs "${1#--bin-dir=}")" ;;
    --prebuilt)
      need_value "$1" $#
      prebuilt="$(abs "$2")"
      shift
      ;;
    --prebuilt=*) prebuilt="$(abs "${1#--prebuilt=}")" ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument \`$1\`" "run ci/release.sh --help" 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${out:-$root/dist}"
read -r -a xtask <<<"${XTASK:-cargo run --locked --quiet --package xtask --}"

# The version: Cargo.toml's [package] version; --version must agree (the
# manifest and archive names carry the compiled-in version).
crate_version="$(awk '/^\[/ { pkg = ($0 == "[package]") } pkg && /^version *=/ { gsub(/^version *= *"|".*$/, ""); print; exit }' Cargo.toml)"
[ -n "$crate_version" ] || die "cannot read the package version from $root/Cargo.toml" "it needs a version = \"x.y.z\" line under [package]"
if [ -n "$version" ]; then
  version="${version#openwrk-}"
  version="${version#v}"
  [ "$version" = "$crate_version" ] || die "--version $version does not match Cargo.toml's version $crate_version" \
    "bump version in Cargo.toml (and commit Cargo.lock) before tagging openwrk-v$version" 2
else
  version="$crate_version"
fi
tag="openwrk-v$version"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null)" ||
    die "SOURCE_DATE_EPOCH is unset and there is no git history to take it from" "export SOURCE_DATE_EPOCH=<unix seconds>"
fi
export SOURCE_DATE_EPOCH

mode="release"
if [ "$dry_run" = 1 ]; then mode="dry run"; fi
echo "release: $mode of $tag (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH) into $out"

if [ "$dry_run" = 0 ]; then
  [ -n "$prebuilt" ] || die "a release needs the prebuilt openwork-server and owpenbot" \
    "pass --prebuilt DIR or set OPENWRK_PREBUILT_DIR (ci/release.sh --dry-run works without them)"
  if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet HEAD --; then
    die "the working tree has uncommitted changes to tracked files" "release from a clean checkout of the tag"
  fi
  if [ -z "${OPENCODE_VERSION:-}" ] || [ "${OPENCODE_VERSION}" = latest ]; then
    echo "release: note: OPENCODE_VERSION is not pinned; the latest OpenCode release is bundled"
  fi
fi

# The host target, as the bundler names it (for the dry run's checks).
host_target() {
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    MINGW* | MSYS* | CYGWIN* | Windows_NT) os=windows ;;
    *) return 1 ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64 | AMD64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) return 1 ;;
  esac
  echo "$os-$arch"
}
host="$(host_target)" || die "this machine ($(uname -s) $(uname -m)) is not a release target" "run on one of: $ALL_TARGETS"

exe_of() { if [ "$1" = windows-x64 ]; then echo ".exe"; fi; }

# 1. openwrk for every target (or the host on a dry run).
if [ -n "$bin_dir" ]; then
  [ -d "$bin_dir" ] || die "--bin-dir $bin_dir is not a directory" "build into it with ci/build.sh --out $bin_dir"
  echo "release: using the openwrk binaries in $bin_dir"
else
  bin_dir="$root/target/openwrk-bin"
  if [ "$dry_run" = 1 ]; then
    "$root/ci/build.sh" --host-only --out "$bin_dir"
  else
    "$root/ci/build.sh" --out "$bin_dir"
  fi
fi
# A release ships all five targets; a dry run the host's, or all five when
# the bin dir has them (as in CI).
targets="$ALL_TARGETS"
if [ "$dry_run" = 1 ]; then
  for t in $ALL_TARGETS; do
    if [ ! -f "$bin_dir/openwrk-$t$(exe_of "$t")" ]; then targets="$host"; fi
  done
fi
for t in $targets; do
  f="$bin_dir/openwrk-$t$(exe_of "$t")"
  [ -f "$f" ] || die "missing $f" "build it with ci/build.sh --target $t --out $bin_dir (CI builds each target on a native runner)"
done

# 2. dist/.
if [ -n "$prebuilt" ]; then
  [ -d "$prebuilt" ] || die "--prebuilt $prebuilt is not a directory" "it holds openwork-server-<target>[.exe], owpenbot-<target>[.exe] and VERSION"
  bundle_targets=all
  if [ "$targets" != "$ALL_TARGETS" ]; then bundle_targets="$host"; fi
  cmd=("${xtask[@]}" bundle --out "$out" --targets "$bundle_targets" --openwrk-bin-dir "$bin_dir" --prebuilt "$prebuilt")
else
  [ "$dry_run" = 1 ] || die "a release needs --prebuilt" "pass --prebuilt DIR"
  echo "release: no --prebuilt: bundling the stand-in sidecars from the loopback release host (offline)"
  cmd=("${xtask[@]}" repro-check --out "$out" --openwrk-bin-dir "$bin_dir")
fi
echo "release: ${cmd[*]}"
"${cmd[@]}" || die "bundling failed" "see the bundler's error above; nothing was uploaded"

# 3. Check what was written.
manifest="$out/openwrk-sidecars.json"
[ -f "$manifest" ] || die "$manifest is missing" "the bundler must write the manifest; nothing was uploaded"
grep -Eq "^  \"version\": \"${version//./\\.}\",?\$" "$manifest" ||
  die "$manifest does not name openwrk version $version" "rebuild xtask from this checkout (the manifest carries the compiled-in version)"
[ -f "$out/SHA256SUMS" ] || die "$out/SHA256SUMS is missing" "the bundler must write it; nothing was uploaded"
if command -v sha256sum >/dev/null; then
  sha256=(sha256sum)
elif command -v shasum >/dev/null; then
  sha256=(shasum -a 256)
else
  die "neither sha256sum nor shasum is installed" "install coreutils"
fi
(cd "$out" && "${sha256[@]}" -c --quiet SHA256SUMS) || die "SHA256SUMS does not match the files in $out" "a file changed after bundling; bundle again"
files=()
for f in "$out"/*; do
  [ -f "$f" ] || continue
  files+=("$f")
  name="$(basename "$f")"
  # SHA256SUMS lists every file but itself, the (deterministic) signature included.
  case "$name" in SHA256SUMS) continue ;; esac
  if ! awk -v n="$name" 'substr($0, 67) == n { found = 1 } END { exit !found }' "$out/SHA256SUMS"; then
    die "$name is not listed in SHA256SUMS" "every file but SHA256SUMS must be; bundle again"
  fi
done
for t in $targets; do
  case "$t" in windows-*) ext=zip ;; *) ext=tar.gz ;; esac
  [ -f "$out/openwrk-$version-$t.$ext" ] || die "the bundled archive openwrk-$version-$t.$ext is missing from $out" \
    "check that $bin_dir has openwrk-$t$(exe_of "$t")"
done
if xtask_help="$("${xtask[@]}" --help 2>/dev/null)" && grep -q verify-dist <<<"$xtask_help"; then
  echo "release: ${xtask[*]} verify-dist $out"
  "${xtask[@]}" verify-dist "$out" || die "verify-dist found a problem in $out" "see above; nothing was uploaded"
else
  echo "release: note: this xtask has no verify-dist; checked SHA256SUMS and the manifest only"
fi
echo "release: $out checks out (${#files[@]} files)"

# 4. Upload.
if [ "$dry_run" = 1 ]; then
  echo "dry run: would upload ${#files[@]} files to the GitHub release $tag${OPENWRK_RELEASE_REPO:+ of $OPENWRK_RELEASE_REPO}:"
  for f in "${files[@]}"; do
    printf '  %s (%s bytes)\n' "$(basename "$f")" "$(wc -c <"$f" | tr -d ' ')"
  done
  echo "dry run: nothing was uploaded"
  exit 0
fi
command -v gh >/dev/null || die "the GitHub CLI (gh) is not installed" "install it from https://cli.github.com and set GH_TOKEN"
repo=()
if [ -n "${OPENWRK_RELEASE_REPO:-}" ]; then repo=(--repo "$OPENWRK_RELEASE_REPO"); fi
if gh release view "$tag" ${repo[@]+"${repo[@]}"} >/dev/null 2>&1; then
  echo "release: uploading ${#files[@]} files to the existing release $tag"
  gh release upload "$tag" ${repo[@]+"${repo[@]}"} "${files[@]}" ||
    die "uploading to $tag failed" "an asset of the same name may already exist; delete it in the release page, or re-run"
else
  echo "release: creating the release $tag with ${#files[@]} files"
  gh release create "$tag" ${repo[@]+"${repo[@]}"} --verify-tag --title "openwrk $version" \
    --notes "openwrk $version. Verify downloads with \`sha256sum -c SHA256SUMS\`." "${files[@]}" ||
    die "creating the release $tag failed" "the tag $tag must exist on GitHub (push it first) and GH_TOKEN needs contents: write"
fi
echo "release: uploaded ${#files[@]} files to $tag"
