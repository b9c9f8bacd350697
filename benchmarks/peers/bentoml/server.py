"""Starts `bentoml serve service:TorchScript` on a TorchScript file.

Knobs (service.py): one worker (workers=1: the server has one CPU), adaptive batching on
with max_batch_size 64. BentoML chooses the batch wait itself (its dispatcher learns the
forward's cost) within max_latency_ms. Requests are JSON {"x": [[...]]}: the API's argument.

    python server.py MODEL.pt PORT
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
os.environ["BERTH_PEER_MODEL"] = os.path.abspath(sys.argv[1])
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
bentoml = os.path.join(os.path.dirname(sys.executable), "bentoml")
os.execv(bentoml, [bentoml, "serve", "service:TorchScript", "--working-dir", here,
                   "--host", "127.0.0.1", "--port", sys.argv[2]])
