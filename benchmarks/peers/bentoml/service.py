"""A BentoML service for a TorchScript file (BentoML 1.4's @bentoml.service /
@bentoml.api, adaptive batching as in its docs). The model path comes from BERTH_PEER_MODEL."""
import os
import sys

import bentoml
import numpy as np
import torch


@bentoml.service(workers=1, traffic={"timeout": 60})
class TorchScript:
    def __init__(self):
        self.module = torch.jit.load(os.environ["BERTH_PEER_MODEL"]).eval()
        print(f"bentoml adapter: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
              file=sys.stderr, flush=True)

    # Adaptive batching: up to 64 rows, and the dispatcher keeps each request's expected
    # latency under max_latency_ms (it answers 503 past it), set far above every SLO here
    # so that it batches and never sheds.
    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=10000)
    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x.astype(np.float32))).numpy()
