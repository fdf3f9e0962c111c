#!/usr/bin/env bash
# Rebuilds shard_program.so from shard.c: discriminator header -> clang -> link.py.
# Needs clang-16 (Debian: apt-get install -y clang-16) and python3; no Solana toolchain.
set -euo pipefail
cd "$(dirname "$0")"

CLANG=${CLANG:-clang-16}
BUILD=${BUILD_DIR:-build}
mkdir -p "$BUILD"

python3 gen_discriminators.py discriminators.h

# -mcpu=v2: SBPF v0 rejects v3's 32-bit jumps.  -fno-builtin/-ffreestanding: no
# libc, so clang must not turn loops into memcpy/memset calls.  -fno-jump-tables:
# switch tables would need relocated code pointers.  -fPIC keeps pointer tables
# in .data.rel.ro instead of writable .data.
"$CLANG" -target bpfel -mcpu=v2 -O2 -ffreestanding -fno-builtin -fno-jump-tables -fPIC \
    -Wall -Wextra -Werror -c shard.c -o "$BUILD/shard.o"

python3 link.py "$BUILD/shard.o" shard_program.so
sha256sum shard_program.so
