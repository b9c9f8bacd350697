"""KServe's Python model server (kserve.Model + ModelServer, as in KServe's "custom
model" docs) serving a TorchScript file on the Open Inference Protocol v2 REST endpoint.

KServe's Python server has no dynamic batching of its own (KServe batches in its agent
sidecar, a Kubernetes component), so every request runs one forward. One uvicorn worker,
gRPC off (only REST is measured).

    python server.py MODEL.pt PORT
"""
import sys

PATH, PORT = sys.argv[1], int(sys.argv[2])
sys.argv = sys.argv[:1]  # kserve parses the command line when imported

import torch  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402


class TorchScript(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        self.module = torch.jit.load(self.path).eval()
        self.ready = True
        print(f"kserve adapter: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
              file=sys.stderr, flush=True)
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.inference_mode():
            y = self.module(x).numpy()
        out = InferOutput(name="y", shape=list(y.shape), datatype="FP32", data=y.ravel().tolist())
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    ModelServer(http_port=PORT, workers=1, enable_grpc=False,
                enable_latency_logging=False).start([TorchScript("m", PATH)])
