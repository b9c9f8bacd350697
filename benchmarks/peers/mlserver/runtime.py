"""A custom MLServer runtime for a TorchScript file (MLServer's "custom inference
runtime" docs: subclass MLModel, decode with NumpyCodec). MLServer has no PyTorch runtime
of its own; this is the documented way to serve one.

For perf_analyzer (run.py --load perf_analyzer), server.py may declare the inputs in the
model's settings and give the path of Triton's model configuration, which a custom handler
(MLServer's documented way to add an endpoint) serves at /v2/models/m/config: perf_analyzer
reads it once, before it sends anything."""
import json
import sys

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class TorchScriptModel(MLModel):
    async def load(self) -> bool:
        self.module = torch.jit.load(self.settings.parameters.uri).eval()
        print(f"mlserver adapter: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
              file=sys.stderr, flush=True)
        extra = self.settings.parameters.extra or {}
        self.triton_config = None
        if extra.get("triton_config"):
            with open(extra["triton_config"]) as f:
                self.triton_config = json.load(f)["config"]
        return True

    @custom_handler(rest_path="/v2/models/m/config", rest_method="GET")
    async def config(self) -> dict:
        if self.triton_config is None:
            raise MLServerError("no Triton model configuration was given", status_code=404)
        return self.triton_config

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # With adaptive batching on, payload holds the batched rows (MLServer concatenates
        # the requests' tensors along the first axis and splits the answer back).
        x = torch.from_numpy(NumpyCodec.decode_input(payload.inputs[0]))
        with torch.inference_mode():
            y = self.module(x).numpy()
        # The output as NumpyCodec.encode_output builds it, less its content_type parameter:
        # perf_analyzer's HTTP client (tritonclient 2.40) takes an output's "parameters" for
        # the binary extension's and fails without binary_data_size.
        out = ResponseOutput(name="y", shape=list(y.shape), datatype="FP32", data=y.ravel().tolist())
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[out])
