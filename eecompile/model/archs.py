"""Built-in multi-exit architectures (the zoo's models; ``eecompile.model.zoo`` names them).

``dsnet``: a MobileNet-style CNN of depthwise-separable blocks with an exit after every
stage (SDN-style heads: 1x1 conv, global average pool, linear). ``resnet``: a small
residual CNN with a different layout (residual adds, strided 3x3 convs), so that tools
are checked on more than one architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from eecompile.model.contract import EarlyExitModel


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU6()]


def ds_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, each with BatchNorm and ReLU6 (MobileNet v1 block)."""
    return nn.Sequential(*_conv_bn(c_in, c_in, 3, stride, groups=c_in), *_conv_bn(c_in, c_out, 1))


def exit_head(c_in: int, n_classes: int, hidden: int, size: int) -> nn.Sequential:
    """SDN-style exit that keeps some spatial layout: average-pool the ``size x size`` map
    to about 4x4 (pooling first keeps the 1x1 conv cheap), 1x1 conv, flatten, linear."""
    pool = max(1, size // 4)
    out = size // pool
    return nn.Sequential(nn.AvgPool2d(pool), *_conv_bn(c_in, hidden, 1), nn.Flatten(),
                         nn.Linear(hidden * out * out, n_classes))


def dsnet(input_shape: Sequence[int] = (1, 28, 28), widths: Sequence[int] = (32, 64, 128, 128),
          n_classes: int = 10, class_names: Sequence[str] | None = None, name: str = "dsnet") -> EarlyExitModel:
    """Depthwise-separable CNN, one stage per width; stages 1 and 2 halve the resolution."""
    c_img = input_shape[0]
    segments: list[nn.Module] = []
    heads: list[nn.Module] = []
    c_prev = c_img
    size = input_shape[1]
    for k, c in enumerate(widths):
        if k == 0:
            layers = [*_conv_bn(c_img, c, 3), ds_block(c, c)]
        else:
            stride = 2 if k in (1, 2) and input_shape[1] >= 16 else 1
            size //= stride
            layers = [ds_block(c_prev, c, stride), ds_block(c, c)]
        segments.append(nn.Sequential(*layers))
        heads.append(exit_head(c, n_classes, hidden=max(32, c), size=size))
        c_prev = c
    return EarlyExitModel(segments, heads, tuple(input_shape), class_names, name=name)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c_in, c_out, 3, stride), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out
                     else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


def resnet(input_shape: Sequence[int] = (1, 28, 28), widths: Sequence[int] = (16, 32, 64),
           n_classes: int = 10, class_names: Sequence[str] | None = None, name: str = "resnet") -> EarlyExitModel:
    """Small residual CNN, one residual block per stage; SDN-style early exits, a pooled linear final exit."""
    segments: list[nn.Module] = []
    heads: list[nn.Module] = []
    c_prev = input_shape[0]
    size = input_shape[1]
    for k, c in enumerate(widths):
        stride = 2 if k > 0 and input_shape[1] >= 16 else 1
        size //= stride
        segments.append(ResBlock(c_prev, c, stride))
        last = k == len(widths) - 1
        heads.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)) if last
                     else exit_head(c, n_classes, hidden=32, size=size))
        c_prev = c
    return EarlyExitModel(segments, heads, tuple(input_shape), class_names, name=name)
