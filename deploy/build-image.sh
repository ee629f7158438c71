#!/usr/bin/env bash
# Builds the worker image with podman on this machine, with no registry: compiles the release
# binary on the host (cargo is a no-op when it is up to date), strips it into target/image/,
# makes a minimal runtime base from the host's own glibc, libgcc_s and CA bundle (FROM-scratch
# style, no shell, a `nonroot` uid/gid 65532), and builds deploy/Dockerfile on it. The last line
# printed is the image reference.
#
#   deploy/build-image.sh                        # -> localhost/veltrix:dev
#   VELTRIX_IMAGE=localhost/veltrix:test deploy/build-image.sh
#   RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot deploy/build-image.sh   # a public base
#   VELTRIX_BINARY=target/release/veltrix deploy/build-image.sh   # package a binary built already
#
# Users with a registry build the same Dockerfile from public bases: docker build -f deploy/Dockerfile .
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/podman/lib.sh

IMAGE="${VELTRIX_IMAGE:-localhost/veltrix:dev}"
ensure_podman >&2

# VELTRIX_BINARY: a release binary already built (scripts/test.sh passes the one its workspace
# build made: building `--bin veltrix` alone resolves the dependencies' features without the
# dev-dependencies, a second build of most crates, about 7 minutes on 2 cores).
BINARY="${VELTRIX_BINARY:-}"
if [[ -z "$BINARY" ]]; then
  echo "== compiling the worker (release)" >&2
  cargo build --release --locked --bin veltrix >&2
  BINARY=target/release/veltrix
fi
[[ -x "$BINARY" ]] || { echo "error: $BINARY is not an executable worker binary" >&2; exit 1; }
mkdir -p target/image
strip -o target/image/veltrix.tmp "$BINARY"
mv target/image/veltrix.tmp target/image/veltrix

# The base: exactly the shared objects the binary loads (ldd), the CA bundle and the user
# database, named by a hash of their contents so it is rebuilt only when one of them changes.
make_base() {
  local root libs lib hash tag
  root="$(mktemp -d)"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
  # `libc.so.6 => /lib/…/libc.so.6 (…)` lines, and the loader's own `/lib64/ld-linux….so.2 (…)`.
  libs="$(ldd target/image/veltrix | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u | tr '\n' ' ')"
  for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  hash="$(cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
  tag="localhost/veltrix-base:$hash"
  if ! podman image exists "$tag"; then
    echo "== making the runtime base $tag from: ${libs}/etc/ssl/certs/ca-certificates.crt" >&2
    tar --numeric-owner -C "$root" -c . | podman import - "$tag" >&2
  fi
  rm -rf "$root"
  echo "$tag"
}

if [[ -n "${RUNTIME_BASE:-}" ]]; then
  base="$RUNTIME_BASE"
else
  base="$(make_base)"
fi

echo "== building $IMAGE on $base" >&2
podman build --layers -f deploy/Dockerfile \
  --build-arg BINARY_FROM=prebuilt \
  --build-arg RUNTIME_BASE="$base" \
  -t "$IMAGE" . >&2
size="$(podman image inspect "$IMAGE" --format '{{.Size}}')"
echo "== $IMAGE: $((size / 1000000)) MB ($size bytes), user $(podman image inspect "$IMAGE" --format '{{.Config.User}}')" >&2
echo "$IMAGE"
