#!/bin/sh
# The image test: berth deploy's build context really builds and really serves.
#
#  1. a Debian bookworm minbase root file system (debootstrap, cached) is imported with
#     `podman import` as debian:bookworm-slim, the Dockerfile's base;
#  2. `berth deploy` writes the context for the seed model, as TorchScript and, where the
#     torch here can export one, as a .pt2 package (each then goes through 3-6);
#  3. `podman build` builds it (storage in a temporary directory: overlay, or vfs where
#     overlay cannot mount; Debian packages cached between runs);
#  4. the image is checked: size against the naive image (1.46 GB with Debian's
#     libtorch1.13 for TorchScript; for a .pt2, python3 + `pip install torch` CPU, see
#     NAIVE_PT2_BYTES), no compiler and no torch Python package inside, non-root user,
#     labels, refusal of a wrong model sha256;
#  5. it runs with runc, the port published on 127.0.0.1, root file system read-only and
#     all capabilities dropped (as the Kubernetes manifests ask); once ready, v2 and v1
#     requests must give berth.load(...).predict's answers;
#  6. SIGTERM must end it with exit code 0 within the grace period;
#  7. TorchScript only: a plain torch.jit.save file (no berth.json), deployed with
#     --input alone (the outputs learnt from a probe forward and embedded), whose context
#     is the seed's but for the model (same Dockerfile up to the model's sha256, same
#     berth source), is served by the same image with that model file in place of its
#     own: batched, answering as berth.load(...).predict does. This costs a deploy and a
#     container start, not a second build;
#  8. a two-model repository (the seed model, and the plain file with its signature in
#     config.toml) gets its own context from `berth deploy REPO/`, built and run the same
#     way: both models answer as berth.load(...).predict does, a file whose sha256 is not
#     the one deploy wrote into config.toml stops the server at start (exit 2), SIGTERM
#     exits 0;
#  9. the storage is deleted.
#
# Usage: tests/image/run.sh        (root; podman, runc, debootstrap; berth built in place)
# Environment: BERTH_CACHE_DIR (default /var/tmp/berth-cache), PYTHON (default the
# project's .venv python, else /usr/bin/python3), BERTH_IMAGE_MAX_RATIO (default 0.45),
# BERTH_IMAGE_KEEP=1 keeps the storage and context for a look afterwards.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${BERTH_CACHE_DIR:-/var/tmp/berth-cache}
max_ratio=${BERTH_IMAGE_MAX_RATIO:-0.45}
max_ratio_pt2=${BERTH_IMAGE_MAX_RATIO_PT2:-0.45}
naive_bytes=1460000000
# The naive .pt2 image: debian:bookworm-slim + python3 + python3-pip (built and measured
# in this run) + what `pip install --target DIR torch==2.13.0 numpy` writes with the CPU
# wheel, 944,903,549 bytes (du -sb DIR, measured here 2026-12-03): the image a user who
# pip-installs torch gets.
pip_torch_bytes=944903549
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=/usr/bin/python3; fi
fi
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "image-test: $*"; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }

mkdir -p "$cache/apt-archives/partial"
work=$(mktemp -d /var/tmp/berth-image.XXXXXX)
container=berth-image-test-$$
driver=overlay
pm() { podman --root "$work/storage" --runroot "$work/run" --storage-driver "$driver" \
              --events-backend none --cgroup-manager cgroupfs "$@"; }
cleanup() {
    if [ -n "${BERTH_IMAGE_KEEP:-}" ]; then say "kept $work (BERTH_IMAGE_KEEP)"; return; fi
    pm rm -f -t 0 "$container" >/dev/null 2>&1 || true
    pm system reset --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. base image
tarball=$("$repo/tests/image/base.sh" "$cache")
if ! pm import "$tarball" docker.io/library/debian:bookworm-slim >/dev/null 2>"$work/import.err"; then
    say "overlay storage unusable here ($(tail -n 1 "$work/import.err")); using vfs"
    pm system reset --force >/dev/null 2>&1 || true
    driver=vfs
    pm import "$tarball" docker.io/library/debian:bookworm-slim >/dev/null
fi
say "base image imported ($driver storage in $work)"
# Debian packages already on this machine seed the package cache (hard links, no copy).
for deb in /var/cache/apt/archives/*.deb; do
    [ -e "$deb" ] && ln -f "$deb" "$cache/apt-archives/" 2>/dev/null || true
done

# 2-7 for one model file: test_image MODEL NAIVE_BYTES MAX_RATIO [PLAIN_MODEL]
test_image() {
model=$1 naive_bytes=$2 max_ratio=$3 plain=${4:-}
rm -rf "$work/ctx"
"$PYTHON" -m berth deploy "$model" --name my_model --out "$work/ctx" >"$work/deploy.out"
image=$(sed -n 's/^  image: *//p' "$work/deploy.out")
[ -n "$image" ] || fail "berth deploy printed no image: $(cat "$work/deploy.out")"
sha=$(sha256sum "$model" | cut -d' ' -f1)
case "$image" in *latest*) fail "image tag is latest: $image" ;; esac
[ "$image" = "my-model:$(echo "$sha" | cut -c1-12)" ] || fail "image $image is not tagged with the model's sha256 prefix"

# 3. build
say "building $image (log: build.log; this takes a while)"
start=$(date +%s)
if ! pm build --format docker --pull=never --network host --layers=false \
        --volume "$cache/apt-archives:/var/cache/apt/archives" \
        -t "$image" "$work/ctx" >"$work/build.log" 2>&1; then
    tail -n 60 "$work/build.log" >&2
    fail "podman build failed"
fi
build_s=$(( $(date +%s) - start ))
grep -h "collect_runtime_libs:" "$work/build.log" | sed 's/^/image-test: /' || true

# 4. what is in the image
size=$(pm image inspect --format '{{.Size}}' "$image")
ratio=$("$PYTHON" -c "print(f'{$size / $naive_bytes:.3f}')")
say "image size: $((size / 1000000)) MB vs naive $((naive_bytes / 1000000)) MB: ratio $ratio (limit $max_ratio); build took ${build_s} s"
"$PYTHON" -c "import sys; sys.exit(0 if $size <= $max_ratio * $naive_bytes else 1)" \
    || fail "image is $((size / 1000000)) MB, over $max_ratio x the naive $((naive_bytes / 1000000)) MB"
labels=$(pm image inspect --format '{{json .Labels}}' "$image")
echo "$labels" | grep -q "\"dev.berth.model.sha256\":\"$sha\"" || fail "label dev.berth.model.sha256 missing: $labels"
echo "$labels" | grep -q '"dev.berth.version"' || fail "label dev.berth.version missing: $labels"
user=$(pm image inspect --format '{{.Config.User}}' "$image")
[ "$user" = "10001:10001" ] || fail "image user is '$user', expected 10001:10001"
pm image inspect --format '{{json .Config.Healthcheck}}' "$image" | grep -q "health/ready" \
    || fail "HEALTHCHECK lost in the image"
pm run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    --health-interval disable --entrypoint /bin/sh "$image" 2>"$work/probe.err" -c '
    for tool in gcc cc g++ cmake make; do command -v $tool && exit 10; done
    python3 -c "import torch" 2>/dev/null && exit 11
    dpkg-query -W -f="\${Package}\n" | grep -E "^(libtorch|libopencv|libavcodec|libgdal|libqt5|python3-torch)" && exit 12
    python3 -c "import berth._core" || exit 13
    exit 0' || { code=$?; grep -v "systemd connection" "$work/probe.err" >&2; fail "the runtime image holds build tools, the torch package or libtorch's package dependencies, or cannot import berth (code $code)"; }
say "runtime image: no compiler, no torch Python package, no libtorch/OpenCV/ffmpeg/GDAL/Qt packages; user $user"

# a wrong model sha256 must stop the server at start (exit code 2)
set +e
pm run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    --health-interval disable -e BERTH_MODEL_SHA256=0000000000000000000000000000000000000000000000000000000000000000 \
    "$image" >"$work/mismatch.log" 2>&1
code=$?
set -e
[ "$code" = 2 ] || { cat "$work/mismatch.log" >&2; fail "a wrong BERTH_MODEL_SHA256 gave exit code $code, expected 2"; }
say "a wrong model sha256 is refused at start (exit 2)"

# 5. serve
port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
pm run -d --name "$container" --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    --health-interval disable -e BERTH_NUM_THREADS=2 -p "127.0.0.1:$port:8080" "$image" \
    >/dev/null 2>"$work/run.err" || { cat "$work/run.err" >&2; fail "podman run failed"; }
if ! "$PYTHON" "$repo/tests/image/check_server.py" --url "http://127.0.0.1:$port" \
        --model "$model" --name my-model --timeout 120; then
    pm logs "$container" >&2 || true
    cat "$work/run.err" >&2
    fail "the container did not serve correctly"
fi

# the image's own HEALTHCHECK command, run once by hand (its timer needs systemd)
pm healthcheck run "$container" >/dev/null || fail "the image's HEALTHCHECK reports unhealthy on a ready server"
say "HEALTHCHECK: healthy"

# 6. SIGTERM: readiness off, drain, exit 0 within the grace period (20 s)
start=$(date +%s)
pm kill --signal TERM "$container" >/dev/null
code=$(timeout 40 podman --root "$work/storage" --runroot "$work/run" --storage-driver "$driver" \
       --events-backend none --cgroup-manager cgroupfs wait "$container" || echo timeout)
stop_s=$(( $(date +%s) - start ))
pm logs "$container" >"$work/server.log" 2>&1 || true
[ "$code" = 0 ] || { cat "$work/server.log" >&2; fail "after SIGTERM the server exited with '$code', expected 0"; }
[ "$stop_s" -le 25 ] || fail "the server took ${stop_s} s to stop after SIGTERM"
say "SIGTERM: clean exit 0 after ${stop_s} s"
pm rm -f -t 0 "$container" >/dev/null 2>&1 || true

# 7. a plain file through the same image
if [ -n "$plain" ]; then
    rm -rf "$work/plain-ctx"
    "$PYTHON" -m berth deploy "$plain" --name my_model --input dense_input:FP32:-1,10 \
        --out "$work/plain-ctx" >/dev/null 2>"$work/plain-deploy.err"
    grep -q "outputs learnt from a probe forward" "$work/plain-deploy.err" \
        || { cat "$work/plain-deploy.err" >&2; fail "deploy did not learn the plain file's outputs"; }
    plain_model=$work/plain-ctx/model/model.pt
    plain_sha=$(sha256sum "$plain_model" | cut -d' ' -f1)
    sed "s/$plain_sha/$sha/g; s/$(echo "$plain_sha" | cut -c1-12)/$(echo "$sha" | cut -c1-12)/g" \
        "$work/plain-ctx/Dockerfile" | cmp -s - "$work/ctx/Dockerfile" \
        || fail "the plain file's Dockerfile differs from the seed's beyond the model's sha256"
    diff -r "$work/ctx/berth-src" "$work/plain-ctx/berth-src" >/dev/null \
        || fail "the plain file's context ships another berth source"
    pm run -d --name "$container" --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
        --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
        --health-interval disable -e BERTH_NUM_THREADS=2 -e "BERTH_MODEL_SHA256=$plain_sha" \
        -v "$plain_model:/opt/berth/model/model.pt:ro" -p "127.0.0.1:$port:8080" "$image" \
        >/dev/null 2>"$work/run.err" || { cat "$work/run.err" >&2; fail "podman run (plain file) failed"; }
    if ! "$PYTHON" "$repo/tests/image/check_server.py" --url "http://127.0.0.1:$port" \
            --model "$plain_model" --name my-model --timeout 120; then
        pm logs "$container" >&2 || true
        fail "the container did not serve the plain file correctly"
    fi
    pm logs "$container" >"$work/plain.log" 2>&1 || true
    grep -q "batching on" "$work/plain.log" \
        || { cat "$work/plain.log" >&2; fail "the plain file (outputs from deploy's probe forward) was not batched"; }
    pm rm -f -t 0 "$container" >/dev/null 2>&1 || true
    say "plain torch.jit.save file (deployed with --input): served by the same image, batched"
fi
pm rmi -f "$image" >/dev/null 2>&1 || true
say "passed: $(basename "$model") image $image, $((size / 1000000)) MB (ratio $ratio to the naive $((naive_bytes / 1000000)) MB), built in ${build_s} s"
}

# 8. a repository of two models: TEST_REPOSITORY SEED_MODEL PLAIN_MODEL
test_repository() {
repo_dir=$work/repository
rm -rf "$repo_dir" "$work/repo-ctx"
mkdir -p "$repo_dir/seed/1" "$repo_dir/plain/1"
cp "$1" "$repo_dir/seed/1/model.pt"
cp "$2" "$repo_dir/plain/1/model.pt"
printf 'inputs = ["dense_input:FP32:-1,10"]\nmax_batch_size = 16\n' >"$repo_dir/plain/config.toml"
"$PYTHON" -m berth deploy "$repo_dir" --name my_models --out "$work/repo-ctx" >"$work/repo-deploy.out" 2>&1 \
    || { cat "$work/repo-deploy.out" >&2; fail "berth deploy REPO/ failed"; }
image=$(sed -n 's/^  image: *//p' "$work/repo-deploy.out")
case "$image" in my-models:????????????) ;; *) fail "repository image tag: $image" ;; esac
say "building $image, a two-model repository (log: repo-build.log)"
start=$(date +%s)
if ! pm build --format docker --pull=never --network host --layers=false \
        --volume "$cache/apt-archives:/var/cache/apt/archives" \
        -t "$image" "$work/repo-ctx" >"$work/repo-build.log" 2>&1; then
    tail -n 60 "$work/repo-build.log" >&2
    fail "podman build (repository) failed"
fi
build_s=$(( $(date +%s) - start ))
size=$(pm image inspect --format '{{.Size}}' "$image")
pm image inspect --format '{{json .Labels}}' "$image" | grep -q '"dev.berth.models":"plain:1 seed:1"' \
    || fail "label dev.berth.models missing or wrong: $(pm image inspect --format '{{json .Labels}}' "$image")"
# a model file that is not the one deploy hashed into config.toml: refused at start
set +e
pm run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    --health-interval disable -v "$2:/opt/berth/repository/seed/1/model.pt:ro" \
    "$image" >"$work/repo-mismatch.log" 2>&1
code=$?
set -e
[ "$code" = 2 ] && grep -q "expected $(sha256sum "$1" | cut -d' ' -f1)" "$work/repo-mismatch.log" \
    || { cat "$work/repo-mismatch.log" >&2; fail "a swapped model file in the repository gave exit code $code, expected 2"; }
say "repository: a model file other than the one deployed is refused at start (exit 2)"
port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
pm run -d --name "$container" --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    --health-interval disable -e BERTH_NUM_THREADS=2 -p "127.0.0.1:$port:8080" "$image" \
    >/dev/null 2>"$work/run.err" || { cat "$work/run.err" >&2; fail "podman run (repository) failed"; }
for name in seed plain; do
    if ! "$PYTHON" "$repo/tests/image/check_server.py" --url "http://127.0.0.1:$port" \
            --model "$repo_dir/$name/1/model.pt" --name "$name" --timeout 120; then
        pm logs "$container" >&2 || true
        fail "the repository container did not serve $name correctly"
    fi
done
pm kill --signal TERM "$container" >/dev/null
code=$(timeout 40 podman --root "$work/storage" --runroot "$work/run" --storage-driver "$driver" \
       --events-backend none --cgroup-manager cgroupfs wait "$container" || echo timeout)
pm logs "$container" >"$work/repo-server.log" 2>&1 || true
[ "$code" = 0 ] || { cat "$work/repo-server.log" >&2; fail "after SIGTERM the repository server exited with '$code'"; }
grep -q "2 model version(s) loaded" "$work/repo-server.log" \
    || { cat "$work/repo-server.log" >&2; fail "the repository server did not load both models"; }
pm rm -f -t 0 "$container" >/dev/null 2>&1 || true
pm rmi -f "$image" >/dev/null 2>&1 || true
say "passed: two-model repository image $image, $((size / 1000000)) MB, built in ${build_s} s; both models served, SIGTERM exit 0"
}

# the seed model, under the seed article's name: TorchScript, then .pt2 where torch can export
PYTHONHASHSEED=0 "$PYTHON" "$repo/tests/image/seed_model.py" "$work/model.pt"
"$PYTHON" "$repo/tests/image/seed_model.py" "$work/plain.pt" plain
test_image "$work/model.pt" "$naive_bytes" "$max_ratio" "$work/plain.pt"
test_repository "$work/model.pt" "$work/plain.pt"
if "$PYTHON" -c "import berth.pt2, sys; berth.pt2._torch()" 2>/dev/null; then
    "$PYTHON" "$repo/tests/image/seed_model.py" "$work/model.pt2"
    mkdir -p "$work/naive"
    printf 'FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip && rm -rf /var/lib/apt/lists/*\n' >"$work/naive/Dockerfile"
    pm build --format docker --pull=never --network host --layers=false \
        --volume "$cache/apt-archives:/var/cache/apt/archives" -t naive-python "$work/naive" >"$work/naive.log" 2>&1 \
        || { tail -n 20 "$work/naive.log" >&2; fail "building the naive python3 + pip image failed"; }
    naive_pt2_bytes=$(( $(pm image inspect --format '{{.Size}}' naive-python) + pip_torch_bytes ))
    pm rmi -f naive-python >/dev/null 2>&1 || true
    test_image "$work/model.pt2" "$naive_pt2_bytes" "$max_ratio_pt2"
else
    say "this torch cannot export .pt2 packages: the .pt2 image is not tested here"
fi
