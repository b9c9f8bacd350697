"""Seldon MLServer serving a TorchScript file through runtime.py, with adaptive batching.

Knobs (model-settings.json): max_batch_size 64 and max_batch_time 0.002 s, the same
limits berth serve uses by default, so both batchers may wait up to 2 ms to fill a batch.
parallel_workers 0: inference runs in the server process itself. MLServer's default (1)
moves it to a worker process, which on the single CPU the server is pinned to only adds
the IPC between the two; debug off (no per-request log lines). gRPC and metrics ports are
moved off the way (they cannot be turned off).

    python server.py MODEL.pt PORT [TRITON.json]

TRITON.json (run.py's triton_config, for perf_analyzer only): the model's inputs and
outputs, declared in its settings, and Triton's model configuration, served by runtime.py.
"""
import json
import os
import shutil
import sys
import tempfile

path, port = os.path.abspath(sys.argv[1]), int(sys.argv[2])
triton = os.path.abspath(sys.argv[3]) if len(sys.argv) > 3 else None
root = tempfile.mkdtemp(prefix="mlserver-", dir=os.getcwd())  # the runner's scratch dir
shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime.py"), root)
with open(os.path.join(root, "settings.json"), "w") as f:
    json.dump({"debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": port,
               "grpc_port": port + 1, "metrics_port": port + 2,
               "metrics_dir": os.path.join(root, ".metrics")}, f)
with open(os.path.join(root, "model-settings.json"), "w") as f:
    settings = {"name": "m", "implementation": "runtime.TorchScriptModel",
                "parameters": {"uri": path}, "max_batch_size": 64, "max_batch_time": 0.002}
    if triton:
        with open(triton) as t:
            settings.update(json.load(t)["metadata"])
        settings["parameters"]["extra"] = {"triton_config": triton}
    json.dump(settings, f)
mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
os.chdir(root)
os.execv(mlserver, [mlserver, "start", root])
