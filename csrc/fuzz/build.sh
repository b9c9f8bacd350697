#!/bin/sh
# Builds and runs the codec fuzzer (libFuzzer + ASan/UBSan, clang from Debian).
#   csrc/fuzz/build.sh            build only, into build-fuzz/fuzz_codec
#   csrc/fuzz/build.sh 60         build, then fuzz for 60 seconds from csrc/fuzz/corpus
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/build-fuzz"
mkdir -p "$out"
CC=${CC:-clang}
$CC -std=c11 -g -O1 -Wall -Wextra -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined \
    -I"$root/csrc/include" -I"$root/csrc" \
    "$root/csrc/fuzz/fuzz_codec.c" "$root/csrc/serving/codec.c" "$root/csrc/runtime/tensor.c" \
    "$root/csrc/runtime/error.c" "$root/csrc/serving/jsonutil.c" -lcjson -lm -o "$out/fuzz_codec"
if [ $# -gt 0 ]; then
    mkdir -p "$out/corpus"
    "$out/fuzz_codec" -max_total_time="$1" -max_len=4096 -timeout=10 \
        "$out/corpus" "$root/csrc/fuzz/corpus"
fi
