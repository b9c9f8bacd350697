"""What tests of batching need around the batcher: a model slow enough for requests to
queue behind its forwards, and many threads calling at once."""
import threading


def slow_model():
    """A model whose forward takes tens of milliseconds at batch 1."""
    import torch

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.w = torch.nn.Parameter(torch.randn(512, 512) / 23.0)

        def forward(self, x):
            for _ in range(150):
                x = torch.tanh(x @ self.w)
            return x

    return Slow()


def run_threads(n, target):
    errors = []

    def guarded(i):
        try:
            target(i)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
