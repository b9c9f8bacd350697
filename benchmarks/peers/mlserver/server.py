"""Seldon MLServer serving a TorchScript file through runtime.py, with adaptive batching.

Knobs (model-settings.json): max_batch_size 64 and max_batch_time 0.002 s, the same
limits berth serve uses by default, so both batchers may wait up to 2 ms to fill a batch.
parallel_workers 0: inference runs in the server process itself. MLServer's default (1)
moves it to a worker process, which on the single CPU the server is pinned to only adds
the IPC between the two; debug off (no per-request log lines). gRPC and metrics ports are
moved off the way (they cannot be turned off).

    python server.py MODEL.pt PORT
"""
import json
import os
import shutil
import sys
import tempfile

path, port = os.path.abspath(sys.argv[1]), int(sys.argv[2])
root = tempfile.mkdtemp(prefix="mlserver-", dir=os.getcwd())  # the runner's scratch dir
shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime.py"), root)
with open(os.path.join(root, "settings.json"), "w") as f:
    json.dump({"debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": port,
               "grpc_port": port + 1, "metrics_port": port + 2,
               "metrics_dir": os.path.join(root, ".metrics")}, f)
with open(os.path.join(root, "model-settings.json"), "w") as f:
    json.dump({"name": "m", "implementation": "runtime.TorchScriptModel",
               "parameters": {"uri": path}, "max_batch_size": 64, "max_batch_time": 0.002}, f)
mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
os.chdir(root)
os.execv(mlserver, [mlserver, "start", root])
