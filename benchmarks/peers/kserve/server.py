"""KServe's Python model server (kserve.Model + ModelServer, as in KServe's "custom
model" docs) serving a TorchScript file on the Open Inference Protocol v2 REST endpoint.

KServe's Python server has no dynamic batching of its own (KServe batches in its agent
sidecar, a Kubernetes component), so every request runs one forward. One uvicorn worker,
gRPC off (only REST is measured).

    python server.py MODEL.pt PORT [TRITON.json]

TRITON.json (run.py's triton_config, for perf_analyzer only): the model's inputs and
outputs, returned as its metadata, and Triton's model configuration, served at
/v2/models/m/config by a route added to KServe's FastAPI app. perf_analyzer reads both
once, before it sends anything.
"""
import json
import sys

PATH, PORT = sys.argv[1], int(sys.argv[2])
TRITON = None
if len(sys.argv) > 3:
    with open(sys.argv[3]) as f:
        TRITON = json.load(f)
sys.argv = sys.argv[:1]  # kserve parses the command line when imported

import torch  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402
from kserve.model_server import app  # noqa: E402


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

    def get_input_types(self):
        return TRITON["metadata"]["inputs"] if TRITON else []

    def get_output_types(self):
        return TRITON["metadata"]["outputs"] if TRITON else []

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.inference_mode():
            y = self.module(x).numpy()
        out = InferOutput(name="y", shape=list(y.shape), datatype="FP32", data=y.ravel().tolist())
        # The outputs as the request asked (binary_data: perf_analyzer asks for it).
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out],
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)


if __name__ == "__main__":
    if TRITON:
        app.add_api_route("/v2/models/m/config", lambda: TRITON["config"], methods=["GET"])
    ModelServer(http_port=PORT, workers=1, enable_grpc=False,
                enable_latency_logging=False).start([TorchScript("m", PATH)])
