"""TorchServe (Java 17 frontend + Python worker) serving a TorchScript file through
handler.py: archives it with torch-model-archiver, then `torchserve --start --foreground`.

Knobs (config.properties): batch_size 64 and max_batch_delay 2 ms (berth serve's
defaults), one worker (minWorkers = maxWorkers = 1: the server has one CPU), token
authorization off, no config snapshots; management and metrics APIs on the next ports.

    python server.py MODEL.pt PORT
"""
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
path, port = os.path.abspath(sys.argv[1]), int(sys.argv[2])
bindir = os.path.dirname(sys.executable)
root = tempfile.mkdtemp(prefix="torchserve-", dir=os.getcwd())  # the runner's scratch dir
store = os.path.join(root, "store")
os.makedirs(store)
subprocess.run([os.path.join(bindir, "torch-model-archiver"), "--model-name", "m", "--version", "1.0",
                "--serialized-file", path, "--handler", os.path.join(here, "handler.py"),
                "--export-path", store], check=True)
models = {"m": {"1.0": {"defaultVersion": True, "marName": "m.mar", "minWorkers": 1, "maxWorkers": 1,
                        "batchSize": 64, "maxBatchDelay": 2, "responseTimeout": 120}}}
config = os.path.join(root, "config.properties")
with open(config, "w") as f:
    f.write(f"inference_address=http://127.0.0.1:{port}\n"
            f"management_address=http://127.0.0.1:{port + 1}\n"
            f"metrics_address=http://127.0.0.1:{port + 2}\n"
            "disable_token_authorization=true\n"
            "enable_envvars_config=false\n"
            f"model_store={store}\n"
            "load_models=m.mar\n"
            f"models={json.dumps(models)}\n")
os.chdir(root)
ts = os.path.join(bindir, "torchserve")
os.execv(ts, [ts, "--start", "--foreground", "--ncs", "--disable-token-auth", "--model-store", store,
              "--ts-config", config])
