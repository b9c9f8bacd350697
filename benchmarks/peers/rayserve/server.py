"""Ray Serve serving a TorchScript file: one deployment, one replica, @serve.batch (Ray
Serve's dynamic request batching docs), decoding the Open Inference Protocol v2 JSON body.

Knobs: @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002), berth serve's
defaults; num_replicas 1 with num_cpus 1 (the server's one CPU); max_ongoing_requests 128
so a batch of 64 can form (the default, 5, would cap batches at 5). Ray is started here
with num_cpus=1 and no dashboard (ray.init), and serves HTTP on 127.0.0.1:PORT.

    python server.py MODEL.pt PORT
"""
import os
import signal
import sys
import time

import numpy as np
import ray
import torch
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=128)
class TorchScript:
    def __init__(self, path):
        self.module = torch.jit.load(path).eval()
        print(f"rayserve adapter: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
              file=sys.stderr, flush=True)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def predict(self, xs):
        with torch.inference_mode():
            y = self.module(torch.from_numpy(np.concatenate(xs))).numpy()
        return [row[None] for row in y]

    async def __call__(self, request: Request):
        t = (await request.json())["inputs"][0]
        y = await self.predict(np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]))
        return {"outputs": [{"name": "y", "datatype": "FP32", "shape": list(y.shape),
                             "data": y.ravel().tolist()}]}


if __name__ == "__main__":
    # Ray's session files go under the working directory (the runner's scratch dir), not /tmp/ray.
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             _temp_dir=os.path.join(os.getcwd(), "ray"))
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
    serve.run(TorchScript.bind(sys.argv[1]), route_prefix="/predict")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()
