"""The Keras-style :class:`Sequential` model: a stack of layers trained with compile/fit.

>>> import numpy as np
>>> from berth import set_seed
>>> from berth.train import layers
>>> set_seed(0)
>>> model = Sequential([layers.Dense(8, activation="relu", input_shape=(3,)), layers.Dense(1)])
>>> model.compile(optimizer="adam", loss="mse", metrics=["mae"])
>>> x = np.random.rand(64, 3).astype("float32"); y = x.sum(axis=1, keepdims=True)
>>> history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
>>> sorted(history.history), len(history.history["loss"])
(['loss', 'mae'], 3)
>>> model.predict(x[:2]).shape
(2, 1)
"""

import copy
import math

import numpy as np
import torch
from torch import nn

from .. import _core
from . import data, layers as layer_module, losses, metrics as metric_module, optimizers, saving
from .callbacks import Callback, CallbackList
from .history import History
from .progress import ProgressLogger, format_logs

__all__ = ["Sequential"]

_DTYPES = {name: getattr(torch, name) for name, _, _ in _core.DTYPES}  # the C core's table


def _check_int(value, argument, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{argument} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _fit_arguments(batch_size, epochs, initial_epoch, verbose, validation_split, shuffle, callbacks):
    """fit's options checked, in this order, and normalized:
    ``(batch_size, epochs, initial_epoch, verbose, callbacks)``."""
    batch_size = 32 if batch_size is None else _check_int(batch_size, "batch_size", 1)
    epochs = _check_int(epochs, "epochs", 0)
    initial_epoch = _check_int(initial_epoch, "initial_epoch", 0)
    verbose = 1 if verbose == "auto" else verbose
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0 (silent), 1 (progress bar), 2 (one line per epoch) or 'auto', got {verbose!r}")
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be a number in [0, 1), got {validation_split!r}")
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
    callbacks = list(callbacks or [])
    for index, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{index}]: expected a berth.callbacks.Callback, got {type(cb).__name__}")
    return batch_size, epochs, initial_epoch, verbose, callbacks


class Sequential(nn.Module):
    """A linear stack of layers, trained and saved like a Keras ``Sequential``.

    ``layers`` may hold berth layers, a leading :class:`berth.train.layers.Input`,
    and any ``torch.nn.Module`` (wrapped in :class:`~berth.train.layers.TorchModule`).
    Calling the model on a tensor runs the stack, so it is also a plain torch module.
    """

    __jit_unused_properties__ = ["layers", "built", "output_shape", "optimizer"]

    def __init__(self, layers=None, name="sequential"):
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.body = nn.Sequential()
        self.input_shape = None
        self.input_dtype = None
        self.input_name = None
        self.stop_training = False
        self.history = None
        self._compiled = None
        self._optimizer = None
        self._fit_record = None
        if layers is not None:
            if isinstance(layers, (nn.Module, layer_module.Input, str)) or not hasattr(layers, "__iter__"):
                raise TypeError(f"layers: expected a list of layers, got {type(layers).__name__}")
            for index, layer in enumerate(layers):
                self.add(layer, _argument=f"layers[{index}]")

    # ----------------------------------------------------------------- building
    @property
    def layers(self):
        """The model's layers, in order."""
        return list(self.body)

    @property
    def built(self):
        return self.input_shape is not None

    @property
    def output_shape(self):
        """Shape of one output sample (no batch dim), or None before the model is built."""
        if not self.built:
            return None
        return self.layers[-1].output_shape if len(self.body) else self.input_shape

    def add(self, layer, _argument="layer"):
        """Append ``layer``; if the input shape is known it is built (and checked) now."""
        if isinstance(layer, layer_module.Input):
            if len(self.body) or self.input_shape is not None:
                raise ValueError(f"{_argument}: Input can only come first in a Sequential model")
            self.input_shape, self.input_dtype = layer.shape, layer.dtype
            self.input_name = layer.name
            return
        if isinstance(layer, nn.Module) and not isinstance(layer, layer_module.Layer):
            layer = layer_module.TorchModule(layer)
        if not isinstance(layer, layer_module.Layer):
            raise TypeError(
                f"{_argument}: expected a berth layer (e.g. berth.layers.Dense) or a torch.nn.Module, "
                f"got {type(layer).__name__} {layer!r}"
            )
        if any(existing is layer for existing in self.body):
            raise ValueError(f"{_argument}: layer '{layer.name}' is already in this model; create a new one")
        names = {existing.name for existing in self.body}
        if layer.name is None:
            base, n = layer.base_name, 0
            candidate = base
            while candidate in names:
                n += 1
                candidate = f"{base}_{n}"
            layer.name = candidate
            auto_named = True
        else:
            auto_named = False
            if layer.name in names:
                raise ValueError(f"{_argument}: layer name '{layer.name}' is already used in this model")
        if not len(self.body) and self.input_shape is None and layer.input_shape is not None:
            self.input_shape = layer.input_shape
        if self.built:
            previous = self.output_shape if len(self.body) else self.input_shape
            try:
                self._build_layer(layer, previous)
            except ValueError as error:
                if auto_named:
                    layer.name = None
                after = f"layer '{self.layers[-1].name}'" if len(self.body) else "the input"
                raise ValueError(
                    f"{_argument}: {error} (after {after}, which gives {data.shape_text((None,) + tuple(previous))})"
                ) from None
        self.body.append(layer)

    def _build_layer(self, layer, input_shape):
        if isinstance(layer, layer_module.TorchModule):
            dtype = _DTYPES[self._input_dtype_name()] if not len(self.body) else torch.float32
            if not layer.built:
                layer.output_shape = layer._build(tuple(input_shape), dtype)
                layer.built_input_shape, layer.built = tuple(input_shape), True
            return
        layer.build(input_shape)

    def build(self, input_shape):
        """Build every layer for samples of ``input_shape`` (no batch dim), like Keras' ``build``."""
        if self.built:
            return
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        self.input_shape = tuple(input_shape)
        shape = self.input_shape
        for layer in self.body:
            try:
                self._build_layer(layer, shape)
            except ValueError:
                self.input_shape = None
                raise
            shape = layer.output_shape

    def _ensure_built(self, x, argument="x"):
        if not self.built:
            if not len(self.body):
                raise ValueError("the model has no layers; add some with Sequential([...]) or model.add(...)")
            self.build(tuple(x.shape[1:]))

    def _input_dtype_name(self):
        if self.input_dtype is not None:
            return str(np.dtype(self.input_dtype))
        first = self.layers[0] if len(self.body) else None
        return getattr(first, "input_dtype", "float32")

    def _input_name(self):
        if self.input_name:
            return self.input_name
        return f"{self.layers[0].name}_input" if len(self.body) else "input"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Choose the optimizer, loss and metrics, by Keras name or as objects.

        ``optimizer``: 'sgd', 'adam', 'adamw', 'rmsprop', a ``berth.train.optimizers``
        object (to set ``learning_rate``) or a ``torch.optim.Optimizer``.
        ``loss``: 'mse', 'mae', 'huber', 'binary_crossentropy', 'categorical_crossentropy',
        'sparse_categorical_crossentropy' or a callable ``(y_true, y_pred)``.
        ``metrics``: a list of 'mae', 'mse', 'accuracy' or callables.
        """
        if loss is None:
            raise ValueError("loss: compile needs a loss, e.g. loss='mse' (regression) or "
                             "loss='sparse_categorical_crossentropy' (classes)")
        resolved_loss = losses.get(loss)
        resolved_optimizer = optimizers.get(optimizer)
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, dict)) or not hasattr(metrics, "__iter__"):
            raise TypeError(f"metrics: expected a list such as ['mae'], got {metrics!r}")
        resolved_metrics = [metric_module.get(m, resolved_loss, self.output_shape) for m in metrics]
        names = ["loss"] + [m.name for m in resolved_metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metrics: names must be unique and not 'loss', got {names[1:]}")
        self._compiled = {"loss": resolved_loss, "optimizer": resolved_optimizer, "metrics": resolved_metrics,
                          "metric_specs": list(metrics)}
        self._optimizer = resolved_optimizer if isinstance(resolved_optimizer, torch.optim.Optimizer) else None

    @property
    def optimizer(self):
        """The torch optimizer (created on first fit when compiled with a name)."""
        if self._optimizer is None and self._compiled is not None and self.built:
            self._optimizer = self._compiled["optimizer"].build(self.parameters())
        return self._optimizer

    def _require_compiled(self, method):
        if self._compiled is None:
            raise ValueError(
                f"{method}: the model is not compiled; call model.compile(optimizer='adam', loss='mse') "
                f"(or another loss) before {method}"
            )

    # ------------------------------------------------------------------ data
    def _inputs(self, x, argument="x"):
        x = data.as_array(x, argument)
        self._ensure_built(x, argument)
        data.check_features(x, self._input_name(), self.input_shape, argument)
        dtype = self._input_dtype_name()
        if dtype.startswith("int") and np.issubdtype(x.dtype, np.floating):
            if not np.all(np.equal(np.mod(x, 1), 0)):
                raise ValueError(f"{argument}: input '{self._input_name()}' expects integer ids, got {x.dtype} values")
        return torch.as_tensor(np.ascontiguousarray(x, dtype=np.dtype(dtype)))

    def _pair(self, x, y, x_name="x", y_name="y"):
        x_array, y_array = data.as_array(x, x_name), data.as_array(y, y_name)
        data.check_same_length(x_array, y_array, x_name, y_name)
        if len(x_array) == 0:
            raise ValueError(f"{x_name}: expected at least one sample, got 0")
        x_tensor = self._inputs(x_array, x_name)
        y_tensor = data.prepare_targets(y_array, self._compiled["loss"], self.output_shape, y_name)
        return x_tensor, y_tensor

    def _device(self):
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ training
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Train for ``epochs`` epochs and return a :class:`~berth.train.History`.

        ``validation_split`` holds out the *last* fraction of samples (before
        shuffling), as Keras does; ``validation_data=(x_val, y_val)`` gives them
        explicitly. ``verbose``: 0 silent, 1 progress bar, 2 one line per epoch.
        """
        self._require_compiled("fit")
        batch_size, epochs, initial_epoch, verbose, callbacks = _fit_arguments(
            batch_size, epochs, initial_epoch, verbose, validation_split, shuffle, callbacks)
        x_train, y_train, x_val, y_val = self._fit_data(x, y, validation_split, validation_data)

        device = self._device()
        x_train, y_train = x_train.to(device), y_train.to(device)
        # Taken once: the whole run trains with the optimizer, loss and metrics it began with.
        training = (self.optimizer, self._compiled["loss"], self._compiled["metrics"])
        steps = math.ceil(len(x_train) / batch_size)
        cbs, history = self._fit_callbacks(callbacks, verbose, epochs, steps, batch_size, len(x_train))

        cbs.on_train_begin({})
        logs = {}
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch, {})
            logs = self._fit_epoch(x_train, y_train, batch_size, shuffle, training, cbs)
            if x_val is not None:
                val = self._evaluate_tensors(x_val, y_val, batch_size)
                logs.update({f"val_{k}": v for k, v in val.items()})
            # Checkpoints saved by callbacks record the epoch they were taken at.
            self._fit_record = {"epochs": epoch + 1, "metrics": logs}
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return history

    def _fit_data(self, x, y, validation_split, validation_data):
        """fit's samples as tensors: ``(x_train, y_train, x_val, y_val)``, the last two None
        without validation; ``validation_split`` takes the last samples."""
        x_all, y_all = self._pair(x, y)
        if validation_data is not None:
            if validation_split:
                raise ValueError("pass either validation_split or validation_data, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(f"validation_data must be a tuple (x_val, y_val), got {type(validation_data).__name__}"
                                 f" of length {len(validation_data) if hasattr(validation_data, '__len__') else '?'}")
            x_val, y_val = self._pair(*validation_data, x_name="validation_data[0]", y_name="validation_data[1]")
            return x_all, y_all, x_val, y_val
        if validation_split:
            split_at = int(math.floor(len(x_all) * (1.0 - validation_split)))
            if split_at == 0 or split_at == len(x_all):
                raise ValueError(
                    f"validation_split={validation_split} leaves {split_at} of {len(x_all)} samples for training; "
                    "use more samples or a split that leaves both parts non-empty"
                )
            return x_all[:split_at], y_all[:split_at], x_all[split_at:], y_all[split_at:]
        return x_all, y_all, None, None

    def _fit_callbacks(self, callbacks, verbose, epochs, steps, batch_size, samples):
        """The run's callbacks (progress logger first, History last) and its History, which
        also becomes ``self.history``; ``stop_training`` starts False."""
        history = History()
        extras = [ProgressLogger(verbose)] if verbose else []
        params = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": samples, "verbose": verbose}
        cbs = CallbackList(extras + callbacks + [history], self, params)
        history.set_params(params)
        self.stop_training = False
        self.history = history
        return cbs, history

    def _fit_epoch(self, x_train, y_train, batch_size, shuffle, training, cbs):
        """One epoch over the training samples (shuffled, or in order); its logs: loss and
        metrics averaged over the samples seen (fewer when a batch callback stopped it)."""
        optimizer, loss_fn, metric_fns = training
        names = ["loss"] + [m.name for m in metric_fns]
        batch_logs_needed = bool(cbs.batch_callbacks)
        self.train()
        order = torch.randperm(len(x_train), device=x_train.device) if shuffle else None
        totals = [0.0] * len(names)
        seen = 0
        for step in range(math.ceil(len(x_train) / batch_size)):
            if batch_logs_needed:
                cbs.on_train_batch_begin(step, {})
            batch = slice(step * batch_size, (step + 1) * batch_size)
            index = batch if order is None else order[batch]
            xb, yb = x_train[index], y_train[index]
            optimizer.zero_grad(set_to_none=True)
            output = self.body(xb)
            loss = loss_fn(yb, output)
            loss.backward()
            optimizer.step()
            count = len(xb)
            seen += count
            totals[0] += loss.item() * count
            if metric_fns:
                # Summed as tensors: one conversion per epoch unless a callback needs batch logs.
                with torch.no_grad():
                    for i, metric in enumerate(metric_fns, 1):
                        totals[i] += metric(yb, output).detach() * count
            if batch_logs_needed:
                cbs.on_train_batch_end(step, {k: float(t) / seen for k, t in zip(names, totals)})
                if self.stop_training:
                    break
        return {k: float(t) / seen for k, t in zip(names, totals)}

    def _evaluate_tensors(self, x, y, batch_size):
        loss_fn, metric_fns = self._compiled["loss"], self._compiled["metrics"]
        names = ["loss"] + [m.name for m in metric_fns]
        totals = [0.0] * len(names)
        device = self._device()
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(x), batch_size):
                    xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
                    output = self.body(xb)
                    totals[0] += float(loss_fn(yb, output)) * len(xb)
                    for i, metric in enumerate(metric_fns, 1):
                        totals[i] += float(metric(yb, output)) * len(xb)
        finally:
            self.train(was_training)
        return {k: t / len(x) for k, t in zip(names, totals)}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """Loss (and metrics) on ``x, y``: a float, ``[loss, *metrics]``, or a dict with ``return_dict=True``."""
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else _check_int(batch_size, "batch_size", 1)
        x_tensor, y_tensor = self._pair(x, y)
        results = self._evaluate_tensors(x_tensor, y_tensor, batch_size)
        if (1 if verbose == "auto" else verbose):
            print(f"{len(x_tensor)}/{len(x_tensor)} - {format_logs(results)}")
        if return_dict:
            return results
        values = list(results.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose=0):
        """Outputs for ``x`` (NumPy, float32), computed in inference mode in batches of ``batch_size``.

        ``verbose`` is accepted for Keras compatibility; predict prints nothing.
        """
        batch_size = 32 if batch_size is None else _check_int(batch_size, "batch_size", 1)
        x_tensor = self._inputs(x)
        device = self._device()
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                outputs = [self.body(x_tensor[s:s + batch_size].to(device)).cpu()
                           for s in range(0, len(x_tensor), batch_size)]
        finally:
            self.train(was_training)
        if not outputs:
            return np.zeros((0,) + tuple(d or 0 for d in self.output_shape), dtype=np.float32)
        return torch.cat(outputs).numpy()

    # ------------------------------------------------------------------ weights
    def get_weights(self):
        """All weights and statistics as NumPy arrays, in ``state_dict`` order."""
        return [t.detach().cpu().numpy().copy() for t in self.state_dict().values()]

    def set_weights(self, weights):
        """Set weights from a list like :meth:`get_weights` returns (same order and shapes)."""
        state = self.state_dict()
        weights = list(weights)
        if len(weights) != len(state):
            raise ValueError(f"weights: expected {len(state)} arrays (one per get_weights() entry), got {len(weights)}")
        new = {}
        for (key, current), value in zip(state.items(), weights):
            value = np.asarray(value)
            if tuple(value.shape) != tuple(current.shape):
                raise ValueError(f"weights: '{key}' expects shape {tuple(current.shape)}, got {tuple(value.shape)}")
            new[key] = torch.as_tensor(value, dtype=current.dtype)
        self.load_state_dict(new)

    def _snapshot(self):
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def _restore(self, snapshot):
        self.load_state_dict(snapshot)

    def count_params(self):
        """Total number of weights (trainable and not), as in Keras."""
        return sum(sum(layer.count_params()) for layer in self.layers)

    # ------------------------------------------------------------------ inspection
    def summary(self, print_fn=None):
        """Print Keras' table: each layer's name, type, output shape and parameter count."""
        if not self.built:
            raise ValueError(
                "summary: the model is not built yet; give the first layer input_shape=(...) "
                "or call fit/predict/build first"
            )
        print_fn = print_fn or print
        width, columns = 65, (29, 55)

        def row(*fields):
            line = ""
            for field, stop in zip(fields, columns + (width,)):
                line = (line + " " + str(field))[:stop].ljust(stop)
            return line.rstrip()

        lines = [f'Model: "{self.name}"', "_" * width, row("Layer (type)", "Output Shape", "Param #"), "=" * width]
        trainable = frozen = 0
        for i, layer in enumerate(self.layers):
            t, f = layer.count_params()
            trainable, frozen = trainable + t, frozen + f
            shape = "(" + ", ".join("None" if d is None else str(d) for d in (None,) + tuple(layer.output_shape)) + ")"
            lines.append(row(f"{layer.name} ({type(layer).__name__})", shape, t + f))
            lines.append("=" * width if i == len(self.layers) - 1 else "")
        if not self.layers:
            lines.append("=" * width)
        lines += [f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {frozen:,}", "_" * width]
        for line in lines:
            print_fn(line)

    def get_config(self):
        """A JSON-serialisable description that :meth:`from_config` turns back into the same architecture."""
        return {
            "name": self.name,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "input_dtype": self.input_dtype if self.input_dtype is None else str(np.dtype(self.input_dtype)),
            "input_name": self.input_name,
            "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config):
        """Build a new, untrained model from :meth:`get_config`'s output."""
        if not isinstance(config, dict) or "layers" not in config:
            raise ValueError(f"config: expected a dict from Sequential.get_config() with a 'layers' list, got {config!r}")
        model = cls(name=config.get("name", "sequential"))
        if config.get("input_shape") is not None:
            model.add(layer_module.Input(tuple(config["input_shape"]), dtype=config.get("input_dtype"),
                                         name=config.get("input_name")))
        for index, entry in enumerate(config["layers"]):
            layer_class = layer_module.get(entry.get("class_name"))
            layer_config = copy.deepcopy(entry.get("config", {}))
            if "input_shape" in layer_config:
                layer_config["input_shape"] = tuple(layer_config["input_shape"])
            model.add(layer_class.from_config(layer_config), _argument=f"config['layers'][{index}]")
        return model

    # ------------------------------------------------------------------ saving
    def save(self, path):
        """Write a file for ``berth.load`` and ``berth serve`` with ``berth.json`` embedded: TorchScript,
        or a torch.export / AOTInductor package when ``path`` ends in ``.pt2`` (torch >= 2.6)."""
        saving.save_model(self, path)

    def save_weights(self, path):
        """Write the weights (a ``state_dict``) to ``path``; read back with :meth:`load_weights`."""
        saving.save_weights(self, path)

    def load_weights(self, path):
        """Load weights written by :meth:`save_weights` (tensors only: nothing is unpickled)."""
        saving.load_weights(self, path)

    def __repr__(self):
        return f"<berth Sequential '{self.name}': {len(self.body)} layers>"
