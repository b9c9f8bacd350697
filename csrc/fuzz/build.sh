#!/bin/sh
# Builds and runs the codec fuzzer (libFuzzer + ASan/UBSan, clang from Debian), a target
# of the root CMake project (option BERTH_FUZZER; no Python, no libtorch).
#   csrc/fuzz/build.sh            build only, into build-fuzz/fuzz_codec
#   csrc/fuzz/build.sh 60         build, then fuzz for 60 seconds from csrc/fuzz/corpus
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/build-fuzz"
cmake -S "$root" -B "$out" -DCMAKE_C_COMPILER="${CC:-clang}" -DCMAKE_BUILD_TYPE=Debug \
    -DBERTH_FUZZER=ON -DBERTH_EXTENSION=OFF -DBERTH_SHIM=OFF >/dev/null
cmake --build "$out" --target fuzz_codec -j2
if [ $# -gt 0 ]; then
    mkdir -p "$out/corpus"
    "$out/fuzz_codec" -max_total_time="$1" -max_len=4096 -timeout=10 \
        "$out/corpus" "$root/csrc/fuzz/corpus"
fi
