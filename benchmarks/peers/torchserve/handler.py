"""A TorchServe handler for a TorchScript file (BaseHandler loads it; only the request
decoding and the answer are ours, as in TorchServe's custom-handler docs). Each request is
the Open Inference Protocol v2 JSON body; TorchServe hands over a batch of them."""
import json
import sys

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler


class TorchScriptHandler(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        print(f"torchserve adapter: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
              file=sys.stderr, flush=True)

    def preprocess(self, data):
        rows = []
        for request in data:
            body = request.get("data") or request.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            t = body["inputs"][0]
            rows.append(np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]))
        return torch.from_numpy(np.concatenate(rows))

    def postprocess(self, data):
        y = data.numpy()
        return [{"outputs": [{"name": "y", "datatype": "FP32", "shape": [1] + list(y.shape[1:]),
                              "data": row.ravel().tolist()}]} for row in y]
