import pytest
import torch
from torch import nn

from eecompile import EarlyExitModel, split_sequential
from eecompile.errors import ContractError


def head(c, n=10):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n))


def test_shapes_flow_and_state_shapes_recorded():
    m = EarlyExitModel([nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 3, stride=2, padding=1)],
                       [head(4), head(8)], input_shape=(1, 8, 8))
    assert m.state_shapes == [[(4, 8, 8)], [(8, 4, 4)]]
    assert m.n_classes == 10 and m.class_names == [str(i) for i in range(10)]
    outs = m(torch.rand(3, 1, 8, 8))
    assert [tuple(o.shape) for o in outs] == [(3, 10), (3, 10)]


def test_segment_head_count_mismatch():
    with pytest.raises(ContractError, match="2 segments but 1 heads"):
        EarlyExitModel([nn.Identity(), nn.Identity()], [head(1)], input_shape=(1, 4, 4))


def test_shapes_do_not_flow_names_stage():
    with pytest.raises(ContractError) as e:
        EarlyExitModel([nn.Conv2d(1, 4, 3), nn.Conv2d(5, 8, 3)], [head(4), head(8)], input_shape=(1, 8, 8))
    assert e.value.stage_idx == 1 and "stage 1" in str(e.value)


def test_heads_disagree_on_classes():
    with pytest.raises(ContractError, match="stage 1: head gives 5 classes"):
        EarlyExitModel([nn.Identity(), nn.Identity()], [head(1, 10), head(1, 5)], input_shape=(1, 4, 4))


def test_head_must_return_2d_logits():
    with pytest.raises(ContractError, match="expected logits"):
        EarlyExitModel([nn.Identity()], [nn.Identity()], input_shape=(1, 4, 4))


def test_class_names_count():
    with pytest.raises(ContractError, match="3 class names for 10 classes"):
        EarlyExitModel([nn.Identity()], [head(1)], input_shape=(1, 4, 4), class_names=["a", "b", "c"])


def test_segment_returning_non_tensor():
    class Bad(nn.Module):
        def forward(self, x):
            return {"x": x}

    with pytest.raises(ContractError, match="stage 0: segment 0 returned dict"):
        EarlyExitModel([Bad()], [head(1)], input_shape=(1, 4, 4))


def test_tuple_state_flows_between_stages():
    class Pair(nn.Module):  # a transformer-like state: (hidden, mask)
        def forward(self, x):
            return x * 2, torch.ones_like(x[:, :1])

    class Use(nn.Module):
        def forward(self, h, mask):
            return h * mask, mask

    class PairHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 3)

        def forward(self, h, mask):
            return self.fc((h * mask).flatten(1))

    m = EarlyExitModel([Pair(), Use()], [PairHead(), PairHead()], input_shape=(1, 4, 4))
    assert m.state_shapes == [[(1, 4, 4), (1, 4, 4)], [(1, 4, 4), (1, 4, 4)]]


def test_split_sequential():
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
    m = split_sequential(backbone, [1], [head(4), head(8)], input_shape=(1, 6, 6))
    assert m.n_stages == 2 and len(m.segments[0]) == 2 and len(m.segments[1]) == 2
    with pytest.raises(ContractError, match="out of range"):
        split_sequential(backbone, [3], [head(4), head(8)], input_shape=(1, 6, 6))
