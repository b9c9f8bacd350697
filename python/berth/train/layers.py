"""Keras-style layers built on torch modules.

Each layer learns its input shape when it is added to a model (or when the
model first sees data) and creates its torch parameters then, like Keras.
Shapes follow Keras: they exclude the batch dimension, ``None`` marks a size
that can vary, and images are channels-last ``(height, width, channels)``;
layers that need channels-first torch kernels transpose internally, so arrays
are fed in the same layout a Keras user would use.

>>> dense = Dense(4, activation="relu", input_shape=(3,))
>>> dense.build((3,))
(4,)
>>> sum(p.numel() for p in dense.parameters())
16
>>> Conv2D(8, 3).build((28, 28, 1))
(26, 26, 8)
>>> Conv2D(8, 3).build((64,))
Traceback (most recent call last):
...
ValueError: Conv2D expects input of shape (height, width, channels), got (64,); add a Reshape layer before it to give the data that shape
"""

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from . import activations
from .naming import lookup

__all__ = [
    "Layer", "Input", "Dense", "Activation", "Dropout", "BatchNormalization",
    "Flatten", "Reshape", "Conv1D", "Conv2D", "MaxPooling2D",
    "GlobalAveragePooling2D", "Embedding", "LSTM", "TorchModule", "get",
]


def _shape_text(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _positive_int(value, argument, owner):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {argument} must be a positive integer, got {value!r}")
    return value


def _int_tuple(value, n, argument, owner):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    value = tuple(value) if isinstance(value, (tuple, list)) else value
    if not isinstance(value, tuple) or len(value) != n or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise ValueError(f"{owner}: {argument} must be a positive integer or {n} of them, got {value!r}")
    return value


def _padding(value, owner):
    if not isinstance(value, str) or value.lower() not in ("valid", "same"):
        raise ValueError(f"{owner}: padding must be 'valid' or 'same', got {value!r}")
    return value.lower()


def _same_pads(size, kernel, stride, dilation, owner):
    """TensorFlow's 'same' padding: output ceil(size / stride), extra pad on the right."""
    span = (kernel - 1) * dilation + 1
    if stride == 1:
        total = span - 1
    elif size is None:
        raise ValueError(f"{owner}: padding='same' with strides > 1 needs a fixed input size, got None")
    else:
        total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _valid_size(size, kernel, stride, dilation, owner):
    if size is None:
        return None
    out = (size - (kernel - 1) * dilation - 1) // stride + 1
    if out < 1:
        raise ValueError(
            f"{owner}: input size {size} is smaller than the kernel ({kernel}, dilation {dilation}); "
            "use padding='same' or a smaller kernel_size"
        )
    return out


def _snake(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Layer(nn.Module):
    """Base class: a torch module that knows its Keras name, config and shapes.

    Subclasses implement ``_build(input_shape) -> output_shape`` (creating
    their torch parameters) and ``forward``; ``get_config`` returns the
    arguments that recreate the layer.
    """

    base_name = "layer"
    __jit_unused_properties__ = ["owner"]

    def __init__(self, name=None, input_shape=None, input_dim=None):
        super().__init__()
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if input_shape is not None:
            if isinstance(input_shape, int) and not isinstance(input_shape, bool):
                input_shape = (input_shape,)
            if not isinstance(input_shape, (tuple, list)) or not all(
                d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1) for d in input_shape
            ):
                raise ValueError(
                    f"{type(self).__name__}: input_shape must be a tuple of positive integers "
                    f"(None for a size that varies), without the batch size; got {input_shape!r}"
                )
            input_shape = tuple(input_shape)
        self.name = name
        self.input_shape = input_shape
        self.output_shape = None
        self.built = False

    @property
    def owner(self):
        """How error messages refer to this layer, e.g. ``layer 'dense_1' (Dense)``."""
        return f"layer '{self.name}' ({type(self).__name__})" if self.name else type(self).__name__

    def build(self, input_shape):
        """Create the parameters for inputs of ``input_shape`` (no batch dim); return the output shape."""
        input_shape = tuple(input_shape)
        if self.built:
            if input_shape != self.built_input_shape:
                raise ValueError(
                    f"{self.owner} was already built for input shape {_shape_text(self.built_input_shape)}, "
                    f"got {_shape_text(input_shape)}; create a new layer instead of reusing it"
                )
            return self.output_shape
        self.output_shape = tuple(self._build(input_shape))
        self.built_input_shape = input_shape
        self.built = True
        return self.output_shape

    def _build(self, input_shape):
        raise NotImplementedError

    def _needs_rank(self, input_shape, rank, what):
        if len(input_shape) != rank:
            raise ValueError(
                f"{self.owner} expects input of shape {what}, got {_shape_text(input_shape)}; "
                "add a Reshape layer before it to give the data that shape"
            )

    def get_config(self):
        """The arguments that recreate this layer (JSON-serialisable)."""
        config = {"name": self.name}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        config.update(self._config())
        return config

    def _config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        """Recreate a layer from :meth:`get_config`'s output."""
        return cls(**config)

    def count_params(self):
        """``(trainable, non_trainable)`` counts, with BatchNorm's moving statistics non-trainable as in Keras."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        frozen += sum(b.numel() for b in self.buffers() if b.is_floating_point())
        return trainable, frozen

    def extra_repr(self):
        return f"name={self.name!r}"


class Input:
    """Marks the model's input: ``Sequential([Input(shape=(10,)), Dense(1)])``.

    >>> Input(shape=(10,)).shape
    (10,)
    """

    def __init__(self, shape, dtype=None, name=None):
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1) for d in shape
        ):
            raise ValueError(f"Input: shape must be a tuple of positive integers (None for any), got {shape!r}")
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name


class Dense(Layer):
    """``activation(x @ kernel + bias)`` on the last axis (Keras ``Dense``), glorot-uniform initialised."""

    base_name = "dense"

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units", "Dense")
        self.activation_name = activation
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)

    def _build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(
                f"{self.owner} needs a known last dimension (features), got {_shape_text(input_shape)}"
            )
        self.linear = nn.Linear(input_shape[-1], self.units, bias=self.use_bias)
        nn.init.xavier_uniform_(self.linear.weight)
        if self.use_bias:
            nn.init.zeros_(self.linear.bias)
        return input_shape[:-1] + (self.units,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))

    def _config(self):
        return {"units": self.units, "activation": self.activation_name, "use_bias": self.use_bias}


class Activation(Layer):
    """Applies a named activation (``Activation("relu")``)."""

    base_name = "activation"

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation_name = activation
        self.activation = activations.get(activation)

    def _build(self, input_shape):
        return input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)

    def _config(self):
        return {"activation": self.activation_name}


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of inputs during training only."""

    base_name = "dropout"

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.dropout = nn.Dropout(self.rate)

    def _build(self, input_shape):
        return input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)

    def _config(self):
        return {"rate": self.rate}


class BatchNormalization(Layer):
    """Normalises the last (channels) axis, Keras' defaults ``momentum=0.99, epsilon=1e-3``."""

    base_name = "batch_normalization"

    def __init__(self, momentum=0.99, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1), got {momentum!r}")
        if not epsilon > 0:
            raise ValueError(f"BatchNormalization: epsilon must be > 0, got {epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.flat = True

    def _build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(f"{self.owner} needs a known channel (last) dimension, got {_shape_text(input_shape)}")
        channels = input_shape[-1]
        # torch's momentum weighs the new batch; Keras' weighs the running value.
        self.norm = nn.BatchNorm1d(channels, eps=self.epsilon, momentum=1.0 - self.momentum,
                                   affine=self.center or self.scale)
        if not self.scale:
            self.norm.weight.requires_grad_(False)
        if not self.center:
            self.norm.bias.requires_grad_(False)
        self.flat = len(input_shape) == 1
        return input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flat:
            return self.norm(x)
        shape = x.shape
        y = self.norm(x.reshape(shape[0], -1, shape[-1]).transpose(1, 2))
        return y.transpose(1, 2).reshape(shape)

    def _config(self):
        return {"momentum": self.momentum, "epsilon": self.epsilon, "center": self.center, "scale": self.scale}


class Flatten(Layer):
    """Flattens everything but the batch dimension (in Keras' channels-last order)."""

    base_name = "flatten"

    def _build(self, input_shape):
        if any(d is None for d in input_shape):
            raise ValueError(f"{self.owner} needs every input dimension known, got {_shape_text(input_shape)}")
        return (math.prod(input_shape),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (one entry may be -1)."""

    base_name = "reshape"

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        if isinstance(target_shape, int) and not isinstance(target_shape, bool):
            target_shape = (target_shape,)
        if not isinstance(target_shape, (tuple, list)) or not target_shape or not all(
            isinstance(d, int) and (d >= 1 or d == -1) for d in target_shape
        ) or list(target_shape).count(-1) > 1:
            raise ValueError(
                f"Reshape: target_shape must be a tuple of positive integers with at most one -1, got {target_shape!r}"
            )
        self.target_shape = [int(d) for d in target_shape]

    def _build(self, input_shape):
        if any(d is None for d in input_shape):
            raise ValueError(f"{self.owner} needs every input dimension known, got {_shape_text(input_shape)}")
        size = math.prod(input_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        if (-1 in self.target_shape and size % known) or (-1 not in self.target_shape and size != known):
            raise ValueError(
                f"{self.owner} cannot reshape {_shape_text(input_shape)} ({size} values) to "
                f"{_shape_text(tuple(self.target_shape))}"
            )
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape([x.shape[0]] + self.target_shape)

    def _config(self):
        return {"target_shape": list(self.target_shape)}


class Conv1D(Layer):
    """1-D convolution over ``(steps, channels)`` inputs."""

    base_name = "conv1d"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters", "Conv1D")
        (self.kernel_size,) = _int_tuple(kernel_size, 1, "kernel_size", "Conv1D")
        (self.strides,) = _int_tuple(strides, 1, "strides", "Conv1D")
        (self.dilation_rate,) = _int_tuple(dilation_rate, 1, "dilation_rate", "Conv1D")
        self.padding = _padding(padding, "Conv1D")
        self.activation_name = activation
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.pads = [0, 0]

    def _build(self, input_shape):
        self._needs_rank(input_shape, 2, "(steps, channels)")
        steps, channels = input_shape
        if channels is None:
            raise ValueError(f"{self.owner} needs a known channel dimension, got {_shape_text(input_shape)}")
        self.conv = nn.Conv1d(channels, self.filters, self.kernel_size, stride=self.strides,
                              dilation=self.dilation_rate, bias=self.use_bias)
        nn.init.xavier_uniform_(self.conv.weight)
        if self.use_bias:
            nn.init.zeros_(self.conv.bias)
        if self.padding == "same":
            self.pads = list(_same_pads(steps, self.kernel_size, self.strides, self.dilation_rate, self.owner))
            out = None if steps is None else math.ceil(steps / self.strides)
        else:
            out = _valid_size(steps, self.kernel_size, self.strides, self.dilation_rate, self.owner)
        return (out, self.filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        if self.pads[0] + self.pads[1] > 0:
            x = F.pad(x, self.pads)
        return self.activation(self.conv(x).transpose(1, 2))

    def _config(self):
        return {"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation_rate": self.dilation_rate,
                "activation": self.activation_name, "use_bias": self.use_bias}


class Conv2D(Layer):
    """2-D convolution over channels-last ``(height, width, channels)`` images."""

    base_name = "conv2d"

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", dilation_rate=(1, 1),
                 activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters", "Conv2D")
        self.kernel_size = _int_tuple(kernel_size, 2, "kernel_size", "Conv2D")
        self.strides = _int_tuple(strides, 2, "strides", "Conv2D")
        self.dilation_rate = _int_tuple(dilation_rate, 2, "dilation_rate", "Conv2D")
        self.padding = _padding(padding, "Conv2D")
        self.activation_name = activation
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.pads = [0, 0, 0, 0]

    def _build(self, input_shape):
        self._needs_rank(input_shape, 3, "(height, width, channels)")
        height, width, channels = input_shape
        if channels is None:
            raise ValueError(f"{self.owner} needs a known channel dimension, got {_shape_text(input_shape)}")
        self.conv = nn.Conv2d(channels, self.filters, self.kernel_size, stride=self.strides,
                              dilation=self.dilation_rate, bias=self.use_bias)
        nn.init.xavier_uniform_(self.conv.weight)
        if self.use_bias:
            nn.init.zeros_(self.conv.bias)
        out = []
        for axis, size in enumerate((height, width)):
            k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation_rate[axis]
            if self.padding == "same":
                before, after = _same_pads(size, k, s, d, self.owner)
                # F.pad lists the last axis (width) first.
                self.pads[2 - 2 * axis], self.pads[3 - 2 * axis] = before, after
                out.append(None if size is None else math.ceil(size / s))
            else:
                out.append(_valid_size(size, k, s, d, self.owner))
        return (out[0], out[1], self.filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        if self.pads[0] + self.pads[1] + self.pads[2] + self.pads[3] > 0:
            x = F.pad(x, self.pads)
        return self.activation(self.conv(x).permute(0, 2, 3, 1))

    def _config(self):
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation_name, "use_bias": self.use_bias}


class MaxPooling2D(Layer):
    """Max over ``pool_size`` windows of channels-last images."""

    base_name = "max_pooling2d"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _int_tuple(pool_size, 2, "pool_size", "MaxPooling2D")
        self.strides = self.pool_size if strides is None else _int_tuple(strides, 2, "strides", "MaxPooling2D")
        self.padding = _padding(padding, "MaxPooling2D")
        self.pads = [0, 0, 0, 0]
        self.window = list(self.pool_size)
        self.step = list(self.strides)

    def _build(self, input_shape):
        self._needs_rank(input_shape, 3, "(height, width, channels)")
        out = []
        for axis, size in enumerate(input_shape[:2]):
            k, s = self.pool_size[axis], self.strides[axis]
            if self.padding == "same":
                before, after = _same_pads(size, k, s, 1, self.owner)
                self.pads[2 - 2 * axis], self.pads[3 - 2 * axis] = before, after
                out.append(None if size is None else math.ceil(size / s))
            else:
                out.append(_valid_size(size, k, s, 1, self.owner))
        return (out[0], out[1], input_shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        if self.pads[0] + self.pads[1] + self.pads[2] + self.pads[3] > 0:
            x = F.pad(x, self.pads, value=float("-inf"))
        return F.max_pool2d(x, self.window, self.step).permute(0, 2, 3, 1)

    def _config(self):
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "padding": self.padding}


class GlobalAveragePooling2D(Layer):
    """Mean over height and width: ``(h, w, c) -> (c,)``."""

    base_name = "global_average_pooling2d"

    def _build(self, input_shape):
        self._needs_rank(input_shape, 3, "(height, width, channels)")
        return (input_shape[2],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2))


class Embedding(Layer):
    """Looks up a ``output_dim`` vector for each integer in ``[0, input_dim)``; inputs are int64."""

    base_name = "embedding"
    input_dtype = "int64"

    def __init__(self, input_dim, output_dim, input_length=None, **kwargs):
        if input_length is not None and kwargs.get("input_shape") is None:
            kwargs["input_shape"] = (input_length,)
        super().__init__(**kwargs)
        self.input_dim = _positive_int(input_dim, "input_dim", "Embedding")
        self.output_dim = _positive_int(output_dim, "output_dim", "Embedding")

    def _build(self, input_shape):
        self.embedding = nn.Embedding(self.input_dim, self.output_dim)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        return tuple(input_shape) + (self.output_dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x.long())

    def _config(self):
        return {"input_dim": self.input_dim, "output_dim": self.output_dim}


class LSTM(Layer):
    """Long short-term memory over ``(timesteps, features)``; returns the last output or the sequence."""

    base_name = "lstm"

    def __init__(self, units, return_sequences=False, **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units", "LSTM")
        self.return_sequences = bool(return_sequences)

    def _build(self, input_shape):
        self._needs_rank(input_shape, 2, "(timesteps, features)")
        steps, features = input_shape
        if features is None:
            raise ValueError(f"{self.owner} needs a known feature dimension, got {_shape_text(input_shape)}")
        self.lstm = nn.LSTM(features, self.units, batch_first=True)
        # Keras' initialisers: glorot kernel, orthogonal recurrent kernel, forget-gate bias 1.
        nn.init.xavier_uniform_(self.lstm.weight_ih_l0)
        nn.init.orthogonal_(self.lstm.weight_hh_l0)
        nn.init.zeros_(self.lstm.bias_ih_l0)
        nn.init.zeros_(self.lstm.bias_hh_l0)
        with torch.no_grad():
            self.lstm.bias_ih_l0[self.units:2 * self.units].fill_(1.0)
        return (steps, self.units) if self.return_sequences else (self.units,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        if self.return_sequences:
            return out
        return out[:, -1]

    def _config(self):
        return {"units": self.units, "return_sequences": self.return_sequences}


class TorchModule(Layer):
    """Wraps any ``torch.nn.Module`` as a layer; its output shape is found by running it once.

    The module receives tensors in the layout the model carries (channels-last
    for images) and must keep the batch dimension first.

    >>> TorchModule(nn.Linear(3, 2)).build((3,))
    (2,)
    """

    def __init__(self, module, name=None):
        if not isinstance(module, nn.Module):
            raise TypeError(f"TorchModule: module must be a torch.nn.Module, got {type(module).__name__}")
        super().__init__(name=name)
        self.module = module
        self.base_name = _snake(type(module).__name__)

    def _probe(self, input_shape, fill, dtype):
        shape = [2] + [fill if d is None else d for d in input_shape]
        return tuple(self.module(torch.zeros(shape, dtype=dtype)).shape[1:])

    def _build(self, input_shape, dtype=torch.float32):
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                first = self._probe(input_shape, 2, dtype)
                second = self._probe(input_shape, 3, dtype) if None in input_shape else first
        except Exception as error:
            raise ValueError(
                f"{self.owner} cannot take input of shape {_shape_text(input_shape)} "
                f"(batch first, channels last): {type(error).__name__}: {error}"
            ) from None
        finally:
            self.module.train(was_training)
        if not isinstance(first, tuple) or len(first) != len(second):
            raise ValueError(f"{self.owner} must return one tensor with a batch dimension")
        return tuple(a if a == b else None for a, b in zip(first, second))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def get_config(self):
        return {"name": self.name, "module": repr(self.module)}

    @classmethod
    def from_config(cls, config):
        raise TypeError(
            f"layer '{config.get('name')}' wraps a plain torch module, which a config cannot recreate; "
            "rebuild the model in code and use load_weights"
        )


_CLASSES = {cls.__name__.lower(): cls for cls in (
    Dense, Activation, Dropout, BatchNormalization, Flatten, Reshape, Conv1D, Conv2D,
    MaxPooling2D, GlobalAveragePooling2D, Embedding, LSTM, TorchModule,
)}


def get(class_name):
    """Return the layer class called ``class_name`` (as in a config).

    >>> get("Dense").__name__
    'Dense'
    """
    return lookup("class_name", class_name, _CLASSES)
