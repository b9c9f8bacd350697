"""The Dockerfile and .dockerignore of a berth build context.

Two stages, both on ``debian:bookworm-slim`` (the stack berth is tested on):

``builder``
    installs the runtime packages (and records the resulting package list), then the
    build dependencies (compiler, CMake, libtorch-dev, ...), builds berth from the
    source copied into the context, and copies the shared-library closure of berth's
    native modules (libtorch's real dependencies) that the runtime packages lack.
runtime
    Debian's python3, numpy (without its test suite, and byte-compiled only where the
    server imports it), OpenBLAS, cJSON and libmicrohttpd + the built berth +
    that closure + the model; no compiler, no torch Python package, none of the
    OpenCV/ffmpeg/GDAL/Qt that Debian's libtorch package depends on.
"""
import json

BASE_IMAGE = "debian:bookworm-slim"
SERVER_PORT = 8080
GRACE_PERIOD_S = 20
RUNTIME_UID = 10001
MODEL_DIR = "/opt/berth/model"
REPOSITORY_DIR = "/opt/berth/repository"  # a model repository (deploy REPO/)
LIBRARY_DIR = "/opt/berth/libraries"  # custom-operator libraries (deploy --library)
PYTHON_DIR = "/opt/berth/python"

RUNTIME_PACKAGES = ("python3", "python3-numpy", "libcjson1", "libmicrohttpd12", "zlib1g",
                    "libopenblas0-pthread")
# A .pt2 image runs the libtorch carried in its context (see render_prebuilt_dockerfile).
PREBUILT_RUNTIME_PACKAGES = ("python3", "python3-numpy", "libcjson1", "libmicrohttpd12", "libstdc++6")
TORCH_LIB_DIR = "/usr/local/lib/berth-torch"
BUILD_PACKAGES = ("build-essential", "cmake", "python3-dev", "python3-numpy", "libtorch-dev",
                  "libcjson-dev", "libmicrohttpd-dev", "libgnutls28-dev", "zlib1g-dev")

DOCKERIGNORE = """\
# Only the Dockerfile's inputs go to the build: model/, berth-src/ and build/.
k8s
README.md
sample-request.*
**/__pycache__
**/*.pyc
"""

PREBUILT_DOCKERIGNORE = """\
# Only the Dockerfile's inputs go to the build: model/ and runtime/.
k8s
README.md
**/__pycache__
**/*.pyc
"""


def _words(packages):
    return " \\\n        ".join(packages)


def dockerignore(text, models=None):
    """The .dockerignore ``text``; for a repository (``models`` given) its comment names
    repository/ where a single model's names model/."""
    return text.replace(" model/", " repository/") if models else text


def entrypoint(name, model_filename, libraries=(), models=None):
    """The exec-form ENTRYPOINT: ``berth serve`` on the baked-in model, loading the
    operator libraries (their paths in the image) first. With ``models`` (a repository's
    "name:versions" text) it serves the baked-in repository, whose directories name the
    models."""
    target = REPOSITORY_DIR if models else f"{MODEL_DIR}/{model_filename}"
    argv = ["python3", "-m", "berth", "serve", target, "--host", "0.0.0.0", "--port", str(SERVER_PORT)]
    if not models:
        argv += ["--name", name]
    argv += ["--grace-period", str(GRACE_PERIOD_S)]
    for library in libraries:
        argv += ["--library", library]
    return argv


def _libraries_layer(libraries):
    """COPY the operator libraries and load them once at build time: a library the image's
    libtorch cannot load (built for another one, or needing a library the image lacks)
    fails the build with the loader's words, not the pod at start."""
    if not libraries:
        return ""
    return f"""\
COPY libraries/ {LIBRARY_DIR}/
RUN PYTHONPATH={PYTHON_DIR} python3 -c \\
        "import sys; from berth._model import load_libraries; load_libraries(sys.argv[1:], '--library')" \\
        {" ".join(libraries)}
"""


def _labels(name, model_sha256, berth_version, models=None):
    labels = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.description": f"berth model server for {name}",
        "org.opencontainers.image.version": model_sha256[:12],
        "org.opencontainers.image.base.name": BASE_IMAGE,
        "dev.berth.model.name": name,
        "dev.berth.model.sha256": model_sha256,
        "dev.berth.version": berth_version,
    }
    if models:  # model_sha256 is the repository's digest (see repository_files.py)
        del labels["dev.berth.model.name"], labels["dev.berth.model.sha256"]
        labels["org.opencontainers.image.description"] = f"berth model server for repository {name}"
        labels["dev.berth.repository.sha256"] = model_sha256
        labels["dev.berth.models"] = models
    return " \\\n      ".join(f"{key}={json.dumps(value)}" for key, value in labels.items())


def _serving_tail(*, name, model_filename, model_sha256, berth_version, libraries=(), models=None):
    """From the libraries' and model's COPY to the ENTRYPOINT: the same for both kinds of
    image. ``libraries``: the operator libraries' paths in the image. ``models``: for a
    repository, its "name:versions" text; each config.toml carries its versions' sha256,
    which the server checks, so no BERTH_MODEL_SHA256."""
    health = ["python3", "-c",
              "import urllib.request; urllib.request.urlopen("
              f"'http://127.0.0.1:{SERVER_PORT}/v2/health/ready', timeout=2)"]
    copy = (f"COPY repository/ {REPOSITORY_DIR}/" if models
            else f"COPY model/{model_filename} {MODEL_DIR}/{model_filename}")
    sha_env = "" if models else f" \\\n    BERTH_MODEL_SHA256={model_sha256}"
    return f"""\
{_libraries_layer(libraries)}{copy}
LABEL {_labels(name, model_sha256, berth_version, models)}
ENV PYTHONPATH={PYTHON_DIR} \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    OPENBLAS_NUM_THREADS=1{sha_env}
USER {RUNTIME_UID}:{RUNTIME_UID}
EXPOSE {SERVER_PORT}
# Unhealthy after 6 failed checks (60 s), which leaves time for model load and warm-up.
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \\
    CMD {json.dumps(health)}
ENTRYPOINT {json.dumps(entrypoint(name, model_filename, libraries, models))}
"""


def _runtime_base(packages):
    """The runtime stage's packages and user, trimmed of what the server never reads."""
    return f"""\
RUN apt-get update \\
    && apt-get install -y --no-install-recommends -o APT::Keep-Downloaded-Packages=false \\
        {_words(packages)} \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \\
    && find /usr/lib/python3/dist-packages/numpy -depth -type d -name tests -exec rm -rf {{}} + \\
    && find /usr/lib/python3 /usr/lib/python3.11 -depth -type d -name __pycache__ -exec rm -rf {{}} + \\
    && useradd --system --uid {RUNTIME_UID} --user-group --no-create-home \\
        --home-dir /nonexistent --shell /usr/sbin/nologin berth
"""


def render_prebuilt_dockerfile(*, name, model_filename, model_sha256, berth_version, torch_version,
                               libraries=(), models=None):
    """The Dockerfile for a .pt2: berth as built here and the libtorch it was built against.

    An AOTInductor package runs only on the libtorch it was compiled for, which Debian
    does not ship; the context carries that libtorch's libraries (the shared-library
    closure of berth's shim that is not part of the system) and berth's built package.
    """
    return f"""\
# Generated by `berth deploy` (berth {berth_version}) for {_subject(name, models)}: {"with " if models else "a "}.pt2 package{"s" if models else ""},
# served with the libtorch {torch_version} it was compiled for.
# Build:  docker build -t IMAGE .      (see README.md)
FROM {BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
{_runtime_base(PREBUILT_RUNTIME_PACKAGES)}\
COPY runtime/lib/ {TORCH_LIB_DIR}/
COPY runtime/berth/ {PYTHON_DIR}/berth/
# Byte-compile what the server imports, as the source-built image does.
RUN echo {TORCH_LIB_DIR} > /etc/ld.so.conf.d/berth-torch.conf && ldconfig \\
    && PYTHONPATH={PYTHON_DIR} python3 -m berth serve --help >/dev/null
{_serving_tail(name=name, model_filename=model_filename, model_sha256=model_sha256, berth_version=berth_version,
               libraries=libraries, models=models)}"""


def _subject(name, models):
    return f"repository {name} ({models})" if models else f"model {name}"


def render_dockerfile(*, name, model_filename, model_sha256, berth_version, libraries=(), models=None):
    """Return the Dockerfile text for one model, or for a repository (``models``)."""
    return f"""\
# Generated by `berth deploy` (berth {berth_version}) for {_subject(name, models)}.
# Build:  docker build -t IMAGE .      (see README.md)

# ---- builder: compile berth from its own source against Debian's libtorch ----
FROM {BASE_IMAGE} AS builder
ENV DEBIAN_FRONTEND=noninteractive
# The runtime packages go in first, so their package list (what the final stage will
# have) can be recorded before the build dependencies are added.
RUN apt-get update \\
    && apt-get install -y --no-install-recommends \\
        {_words(RUNTIME_PACKAGES)} \\
    && dpkg-query --show --showformat='${{Package}}\\n' | sort > /var/lib/berth-runtime-packages \\
    && apt-get install -y --no-install-recommends \\
        {_words(BUILD_PACKAGES)} \\
    && rm -rf /var/lib/apt/lists/*
COPY berth-src/ /src/berth/
# berth's one CMake project, run by Debian's cmake (no PyPI build backend needed here):
# the native parts built against Debian's libtorch, installed with the Python package.
RUN cmake -S /src/berth -B /tmp/berth-build -DCMAKE_BUILD_TYPE=Release \\
        -DPython_EXECUTABLE=/usr/bin/python3 \\
    && cmake --build /tmp/berth-build -j"$(nproc)" \\
    && cmake --install /tmp/berth-build --prefix {PYTHON_DIR} \\
    && rm -rf /tmp/berth-build
COPY build/collect_runtime_libs.py /src/collect_runtime_libs.py
RUN python3 /src/collect_runtime_libs.py --skip-packages /var/lib/berth-runtime-packages \\
        --dest /opt/berth/rootfs $(find {PYTHON_DIR}/berth -name '*.so' | sort)

# ---- runtime: Debian's python3, numpy, OpenBLAS + built berth + libtorch's closure ----
FROM {BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
{_runtime_base(RUNTIME_PACKAGES)}\
COPY --from=builder /opt/berth/rootfs/ /
COPY --from=builder {PYTHON_DIR}/ {PYTHON_DIR}/
# Byte-compile what the server imports (and only that: the rest of the standard
# library's and numpy's .pyc files were dropped above).
RUN ldconfig \\
    && PYTHONPATH={PYTHON_DIR} python3 -m berth serve --help >/dev/null
{_serving_tail(name=name, model_filename=model_filename, model_sha256=model_sha256, berth_version=berth_version,
               libraries=libraries, models=models)}"""
