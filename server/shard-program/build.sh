#!/usr/bin/env bash
# Rebuilds shard_program.so from shard.c: discriminator header -> clang -> link.py.
# Needs clang-16 (Debian: apt-get install -y clang-16) and python3; no Solana toolchain.
#
#   ./build.sh          rebuild discriminators.h and shard_program.so in place
#   ./build.sh --check  build both in a scratch directory and fail unless they
#                       equal the committed files (the integration tests run this
#                       whenever clang-16 is installed)
set -euo pipefail
cd "$(dirname "$0")"

CLANG=${CLANG:-clang-16}
CHECK=false
if [[ "${1:-}" == "--check" ]]; then
    CHECK=true
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
else
    BUILD=${BUILD_DIR:-build}
    mkdir -p "$BUILD"
fi

# The source is compiled from the build directory so that its
# `#include "discriminators.h"` finds the header generated there.
cp shard.c "$BUILD/shard.c"
python3 gen_discriminators.py "$BUILD/discriminators.h"

# -mcpu=v2: SBPF v0 rejects v3's 32-bit jumps.  -fno-builtin/-ffreestanding: no
# libc, so clang must not turn loops into memcpy/memset calls.  -fno-jump-tables:
# switch tables would need relocated code pointers.  -fPIC keeps pointer tables
# in .data.rel.ro instead of writable .data.
"$CLANG" -target bpfel -mcpu=v2 -O2 -ffreestanding -fno-builtin -fno-jump-tables -fPIC \
    -Wall -Wextra -Werror -c "$BUILD/shard.c" -o "$BUILD/shard.o"
python3 link.py "$BUILD/shard.o" "$BUILD/shard_program.so"

if $CHECK; then
    status=0
    for f in discriminators.h shard_program.so; do
        if ! cmp -s "$f" "$BUILD/$f"; then
            echo "$f differs from a fresh build: run server/shard-program/build.sh and commit the result" >&2
            status=1
        fi
    done
    [[ $status == 0 ]] && echo "discriminators.h and shard_program.so match a fresh build"
    exit $status
fi
cp "$BUILD/discriminators.h" discriminators.h
cp "$BUILD/shard_program.so" shard_program.so
sha256sum shard_program.so
