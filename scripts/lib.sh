#!/usr/bin/env bash
# Shared by herd's scripts: where things live, and installing what is missing.
# shellcheck shell=bash
HERD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERD_CACHE="${HERD_CACHE:-$HOME/.cache/herd}"
# The llama.cpp build is slow: keep it across clones and CI runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERD_CACHE/target}"
HERD_BIN="$CARGO_TARGET_DIR/release"
export HERD_CACHE

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs the Debian packages the build and the tests need, if any is missing.
install_system_packages() {
  local wanted=(cmake libclang-dev build-essential pkg-config python3-venv curl "$@")
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
}

# Builds herd and herd-runner in release mode for this machine's CPU (see .cargo/config.toml).
build_release() {
  forget_stale_llama_build
  log "building herd (release, native CPU; the first build compiles llama.cpp)"
  (cd "$HERD_ROOT" && cargo build --release --bins --locked)
}

# llama.cpp's CMake build is configured once and then kept, so flags added to .cargo/config.toml
# later (-mno-amx-*) never reach a cached build: forget a build configured without them.
forget_stale_llama_build() {
  local cache
  for cache in "$CARGO_TARGET_DIR"/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt; do
    [ -f "$cache" ] || continue
    if [ "$(uname -m)" = x86_64 ] && ! grep -q -- "-mno-amx-int8" "$cache"; then
      log "the cached llama.cpp build predates -mno-amx-int8: rebuilding it"
      (cd "$HERD_ROOT" && cargo clean --release -p llama-cpp-sys-2)
      return
    fi
  done
}

# Prints the path of the verified Gemma 3 270M GGUF, downloading it once.
model_path() {
  "$HERD_ROOT/scripts/fetch-model"
}

# Creates gemma3:270m in the server at $HERD_HOST from the cached GGUF, with herd's CLI.
import_gemma() {
  local gguf dir
  gguf="$(model_path)"
  dir="$(mktemp -d)"
  ln -s "$gguf" "$dir/gemma-3-270m-q4_k_m.gguf"
  cp "$HERD_ROOT/scripts/gemma3-270m.Modelfile" "$dir/Modelfile"
  "$HERD_BIN/herd" create gemma3:270m -f "$dir/Modelfile"
  rm -rf "$dir"
}
