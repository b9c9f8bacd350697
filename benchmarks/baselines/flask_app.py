"""The Flask app a user writes by hand: the model loaded once with torch.jit.load, one
forward per request, Open Inference Protocol v2 JSON in and out.

    python3 benchmarks/baselines/flask_app.py MODEL.pt PORT
"""
import sys

import torch
from flask import Flask, jsonify, request

DTYPES = {"FP32": torch.float32, "FP64": torch.float64, "INT64": torch.int64}

app = Flask(__name__)
model = torch.jit.load(sys.argv[1]).eval()


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.post("/v2/models/<name>/infer")
def infer(name):
    req = request.get_json()
    inp = req["inputs"][0]
    x = torch.tensor(inp["data"], dtype=DTYPES[inp["datatype"]]).reshape(inp["shape"])
    with torch.inference_mode():
        y = model(x)
    return jsonify({"model_name": name, "outputs": [
        {"name": "output_0", "datatype": "FP32", "shape": list(y.shape),
         "data": y.flatten().tolist()}]})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
