"""Training multi-exit models: joint weighted loss, or two-stage (backbone, then heads with distillation).

Joint: ``sum_k w_k * CE(exit_k)`` (SDN / BranchyNet). Two-stage: train the backbone with
its final exit, freeze it, then train the early heads with CE plus KL distillation from
the final exit at temperature T.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eecompile.core.inputs import as_arrays, check_inputs
from eecompile.data.datasets import Dataset
from eecompile.errors import DataError, TrainingError
from eecompile.model.contract import EarlyExitModel
from eecompile.model.zoo import Recipe


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    perm = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def _run_epochs(model: EarlyExitModel, data: Dataset, recipe: Recipe, params, loss_fn, label: str,
                progress: Progress, seed: int, frozen: torch.nn.Module | None = None,
                lr: float | list[float] | None = None) -> None:
    """``params``: parameters, or parameter groups with one ``lr`` each (then ``lr`` is their list)."""
    lr = recipe.lr if lr is None else lr
    opt = torch.optim.AdamW(params, lr=lr[0] if isinstance(lr, list) else lr, weight_decay=1e-4)
    n_steps = recipe.epochs * -(-len(data) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=n_steps)
    x_all = [torch.from_numpy(a) for a in as_arrays(data.x)]  # one tensor per model input
    y_all = torch.from_numpy(data.y)
    rng = np.random.default_rng(seed)
    task = progress.add_task(label, total=n_steps, loss="")
    for _ in range(recipe.epochs):
        model.train()
        if frozen is not None:
            frozen.eval()  # keep BatchNorm statistics of a frozen backbone
        for idx in _batches(len(data), recipe.batch_size, rng):
            t_idx = torch.from_numpy(idx)
            loss = loss_fn(model(*(a[t_idx] for a in x_all)), y_all[t_idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            progress.update(task, advance=1, loss=f"loss {loss.item():.3f}")


def train(model: EarlyExitModel, data: Dataset, recipe: Recipe, seed: int = 0, quiet: bool = False) -> None:
    """Train ``model`` in place on ``data`` (labels required) following ``recipe``."""
    if data.y is None:
        raise DataError(f"{data.name} has no labels; training needs them", hint="give a .npz with x and y, or NAME:train")
    if len(data) == 0:
        raise DataError(f"{data.name} is empty", hint="give at least one batch of labelled samples")
    check_inputs(data.x, model.input_specs, f"training data {data.name}")
    torch.manual_seed(seed)
    n_exits = model.n_stages
    weights = recipe.exit_weights or (1.0,) * n_exits
    if len(weights) != n_exits:
        raise TrainingError(f"recipe has {len(weights)} exit weights for {n_exits} exits",
                            hint="give one weight per exit, or () for equal weights")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn()]
    with Progress(*columns, disable=quiet, transient=False) as progress:
        if recipe.mode == "joint":
            def joint(outs, y):
                return sum(w * F.cross_entropy(o, y) for w, o in zip(weights, outs)) / sum(weights)
            if recipe.head_lr is None:
                _run_epochs(model, data, recipe, model.parameters(), joint, f"train {model.name} (joint)",
                            progress, seed)
            else:  # a pretrained backbone at lr, the fresh exit heads at head_lr (PABEE-style fine-tuning)
                groups = [{"params": list(model.segments.parameters()), "lr": recipe.lr},
                          {"params": list(model.heads.parameters()), "lr": recipe.head_lr}]
                _run_epochs(model, data, recipe, groups, joint, f"train {model.name} (joint)", progress, seed,
                            lr=[recipe.lr, recipe.head_lr])
        elif recipe.mode == "two-stage":
            backbone = list(model.segments.parameters()) + list(model.heads[-1].parameters())
            _run_epochs(model, data, recipe, backbone, lambda outs, y: F.cross_entropy(outs[-1], y),
                        f"train {model.name} backbone", progress, seed)
            for p in backbone:
                p.requires_grad_(False)
            T = recipe.distill_temperature

            def distill(outs, y):
                teacher = F.softmax(outs[-1].detach() / T, dim=1)
                loss = 0.0
                for o in outs[:-1]:
                    kd = F.kl_div(F.log_softmax(o / T, dim=1), teacher, reduction="batchmean") * T * T
                    loss = loss + 0.5 * F.cross_entropy(o, y) + 0.5 * kd
                return loss / max(1, len(outs) - 1)

            heads = [p for h in model.heads[:-1] for p in h.parameters()]
            _run_epochs(model, data, recipe, heads, distill, f"train {model.name} exit heads", progress,
                        seed + 1, frozen=model.segments, lr=recipe.head_lr)
            for p in backbone:
                p.requires_grad_(True)
        else:
            raise TrainingError(f"unknown training mode {recipe.mode!r}", hint="use 'joint' or 'two-stage'")
    model.eval()


@torch.no_grad()
def exit_accuracies(model: EarlyExitModel, data: Dataset, batch_size: int = 512) -> list[float]:
    """Top-1 accuracy of every exit of the float model on ``data``."""
    model.eval()
    correct = np.zeros(model.n_stages)
    for i in range(0, len(data), batch_size):
        outs = model(*(torch.from_numpy(a[i : i + batch_size]) for a in as_arrays(data.x)))
        y = data.y[i : i + batch_size]
        for k, o in enumerate(outs):
            correct[k] += int((o.argmax(1).numpy() == y).sum())
    return (correct / len(data)).tolist()
