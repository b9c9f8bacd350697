"""A custom MLServer runtime for a TorchScript file (MLServer's "custom inference
runtime" docs: subclass MLModel, decode with NumpyCodec). MLServer has no PyTorch runtime
of its own; this is the documented way to serve one."""
import sys

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchScriptModel(MLModel):
    async def load(self) -> bool:
        self.module = torch.jit.load(self.settings.parameters.uri).eval()
        print(f"mlserver adapter: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
              file=sys.stderr, flush=True)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # With adaptive batching on, payload holds the batched rows (MLServer concatenates
        # the requests' tensors along the first axis and splits the answer back).
        x = torch.from_numpy(NumpyCodec.decode_input(payload.inputs[0]))
        with torch.inference_mode():
            y = self.module(x).numpy()
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output("y", y)])
