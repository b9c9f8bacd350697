"""The signature of the two-output model, x -> (x * 2, x + 1), that the conformance
tests with tritonclient and kserve serve as a berth-signed TorchScript file."""
META = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
        "outputs": [{"name": "double", "dtype": "float32", "shape": [-1, 3]},
                    {"name": "plus", "dtype": "float32", "shape": [-1, 3]}]}
