"""LitServe serving a TorchScript file (LitAPI: setup, decode_request, batch, predict,
unbatch, encode_response, as in LitServe's batching docs), decoding the Open Inference
Protocol v2 JSON body the other systems get.

Knobs: max_batch_size 64 and batch_timeout 0.002 s (berth serve's defaults), one worker
on the CPU (workers_per_device 1), one API server; fast_queue on (ZeroMQ between the API
server and the worker: LitServe's docs recommend it above ~100 requests/s).

    python server.py MODEL.pt PORT
"""
import sys

import litserve as ls
import numpy as np
import torch


class TorchScriptAPI(ls.LitAPI):
    def setup(self, device):
        self.module = torch.jit.load(sys.argv[1]).eval()
        print(f"litserve adapter: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
              file=sys.stderr, flush=True)

    def decode_request(self, request):
        t = request["inputs"][0]
        return np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])

    def batch(self, inputs):
        return torch.from_numpy(np.concatenate(inputs))

    def predict(self, x):
        with torch.inference_mode():
            return self.module(x if isinstance(x, torch.Tensor) else torch.from_numpy(x)).numpy()

    def unbatch(self, output):
        return [row[None] for row in output]

    def encode_response(self, output):
        return {"outputs": [{"name": "y", "datatype": "FP32", "shape": list(output.shape),
                             "data": output.ravel().tolist()}]}


if __name__ == "__main__":
    api = TorchScriptAPI(max_batch_size=64, batch_timeout=0.002)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=True)
    server.run(host="127.0.0.1", port=int(sys.argv[2]), num_api_servers=1, log_level="warning",
               generate_client_file=False)
