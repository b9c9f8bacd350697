"""Reference architectures built from ``torch.nn`` alone, for tests and benchmarks.

PyPI's torchvision does not import beside the CPU torch wheel the primary stack uses
("operator torchvision::nms does not exist"), so the conv nets the tests need are
written here: ResNet-18 (He et al., 2015: basic blocks, 2-2-2-2) and MobileNetV3-Small
(Howard et al., 2019: depthwise convolutions, squeeze-and-excitation, hard-swish). They
have the layer structure, parameter count and operators of torchvision's models, which is
what the parity, optimize and serving tests exercise; weights are random.

>>> import torch
>>> sum(p.numel() for p in resnet18().parameters())
11689512
>>> mobilenet_v3_small()(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 1000])
"""
import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (1x1 when the shape changes)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels, squeezed):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        scale = nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(self.pool(x)))))
        return x * scale


def _conv_bn(cin, cout, kernel, stride, groups, activation):
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, use_se, activation, stride):
        super().__init__()
        layers = []
        if expanded != cin:
            layers.append(_conv_bn(cin, expanded, 1, 1, 1, activation))
        layers.append(_conv_bn(expanded, expanded, kernel, stride, expanded, activation))
        if use_se:
            layers.append(SqueezeExcite(expanded, _make_divisible(expanded // 4)))
        layers.append(_conv_bn(expanded, cout, 1, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def _make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV3Small(nn.Module):
    # (kernel, expanded channels, out channels, squeeze-excite, activation, stride)
    CONFIG = [(3, 16, 16, True, nn.ReLU, 2), (3, 72, 24, False, nn.ReLU, 2), (3, 88, 24, False, nn.ReLU, 1),
              (5, 96, 40, True, nn.Hardswish, 2), (5, 240, 40, True, nn.Hardswish, 1),
              (5, 240, 40, True, nn.Hardswish, 1), (5, 120, 48, True, nn.Hardswish, 1),
              (5, 144, 48, True, nn.Hardswish, 1), (5, 288, 96, True, nn.Hardswish, 2),
              (5, 576, 96, True, nn.Hardswish, 1), (5, 576, 96, True, nn.Hardswish, 1)]

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [_conv_bn(3, 16, 3, 2, 1, nn.Hardswish)], 16
        for kernel, expanded, cout, use_se, activation, stride in self.CONFIG:
            layers.append(InvertedResidual(cin, kernel, expanded, cout, use_se, activation, stride))
            cin = cout
        layers.append(_conv_bn(cin, 576, 1, 1, 1, nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def resnet18(num_classes=1000):
    """ResNet-18 with random weights (11.7 M parameters, as torchvision's)."""
    return ResNet18(num_classes)


def mobilenet_v3_small(num_classes=1000):
    """MobileNetV3-Small with random weights."""
    return MobileNetV3Small(num_classes)


class ConvNet(nn.Module):
    """Conv, batch norm, pooling, linear: the operators of an image classifier, small
    enough to export and compile as a .pt2 in seconds (input 3xHxW, 5 outputs)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, 5)

    def forward(self, image):
        return self.head(torch.flatten(self.features(image), 1))


class SlowLinear(nn.Module):
    """A 10 -> 1 linear layer whose every forward also does a fixed chain of matmuls.

    Its forwards take milliseconds whatever the batch, so requests sent together queue up
    behind one and must be coalesced into the next: what a batching test needs on any
    machine, where the seed MLP's microsecond forwards may run each request alone. The
    answer is exactly the linear layer's (the chain's result is multiplied by a zero
    buffer, which compilers cannot fold away).

    >>> m = SlowLinear().eval()
    >>> x = torch.ones(3, 10)
    >>> bool(torch.equal(m(x), m.lin(x)))
    True
    """

    def __init__(self, size=384, steps=8):
        super().__init__()
        self.lin = nn.Linear(10, 1)
        self.register_buffer("work", torch.randn(size, size) / size ** 0.5)
        self.register_buffer("zero", torch.zeros(()))
        self.steps = steps

    def forward(self, x):
        h = self.work + 0.0 * x.size(0)
        for _ in range(self.steps):
            h = torch.tanh(h @ self.work)
        return self.lin(x) + self.zero * h.mean()
