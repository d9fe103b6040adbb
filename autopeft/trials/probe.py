"""The linear-probe baseline: the task head's last linear layer fitted on frozen features.

Features are what that layer reads (the pooled representation: the masked mean for
sentence-transformers models, see ``autopeft.peft.pooling``), computed once for the training
and validation examples with forward passes only. The layer is then fitted by full-batch
L-BFGS on the cross-entropy with an L2 penalty; the penalty is chosen among
:data:`L2_GRID` by validation accuracy (the probe, like every trial, selects on validation).
The fitted weights go back into the model, so the probe is saved, tested on the held-out split
and exported like any other trial. Its compute is counted as a third of a training epoch (a
forward pass over the training set, against forward + backward for a training step).

Measured here (tweets, MiniLM, frozen mean-pooled features): scikit-learn's logistic regression
reaches 0.694; this probe is the same model family.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autopeft.errors import InvalidConfig

L2_GRID = (1e-4, 1e-3, 1e-2)
FORWARD_ONLY_EPOCHS = 1.0 / 3.0


def _last_linear(model: nn.Module) -> nn.Linear:
    from autopeft.peft.modelmap import map_model

    head = map_model(model).head
    linears = [
        m for name in head for m in model.get_submodule(name).modules() if isinstance(m, nn.Linear)
    ]
    if not linears:
        raise InvalidConfig(
            "linear_probe needs a task head ending in a linear layer", "workload.linear_probe"
        )
    return linears[-1]


@torch.no_grad()
def _features(
    trainer, model, layer: nn.Linear, tokens, indices, pad_to, autocast
) -> tuple[torch.Tensor, np.ndarray]:
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(
        lambda m, args, out: captured.append(args[0].detach().float().cpu())
    )
    model.eval()
    ebs = trainer.knobs["eval_batch_size"]
    try:
        for b in range(0, len(indices), ebs):
            batch = trainer._to_device(tokens.batch(indices[b : b + ebs], pad_to))
            batch.pop("labels")
            with autocast:
                model(**batch)
    finally:
        handle.remove()
    return torch.cat(captured), tokens.labels[indices]


def fit_linear(
    X: torch.Tensor, y: np.ndarray, num_labels: int, l2: float, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS: ``(weight (C, d), bias (C,))``."""
    target = torch.as_tensor(y, dtype=torch.long)
    W = torch.zeros(num_labels, X.shape[1], requires_grad=True)
    b = torch.zeros(num_labels, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W.T + b, target) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def run_probe(
    trainer, model, tokens, train_idx, val_idx, pad_to, num_labels, autocast
) -> dict[str, float]:
    """Fit the probe, put its weights into ``model``, checkpoint it, report once; the metrics."""
    from autopeft.trials.metrics import classification_metrics

    t = trainer.timings
    layer = _last_linear(model)
    X, y = _features(trainer, model, layer, tokens, train_idx, pad_to, autocast)
    Xv, yv = _features(trainer, model, layer, tokens, val_idx, pad_to, autocast)
    t.train_examples += len(train_idx)
    t.eval_examples += len(val_idx)
    best = None
    for l2 in L2_GRID:
        W, b = fit_linear(X, y, num_labels, l2)
        logits = (Xv @ W.T + b).numpy()
        metrics = classification_metrics(logits, yv, num_labels)
        if best is None or metrics["accuracy"] > best[0]["accuracy"]:
            loss = float(F.cross_entropy(torch.from_numpy(logits), torch.as_tensor(yv)))
            best = ({**metrics, "loss": loss}, W, b, l2)
    metrics, W, b, l2 = best
    with torch.no_grad():
        layer.weight.copy_(W.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(b.to(layer.bias.dtype))
    metrics = {"epoch": FORWARD_ONLY_EPOCHS, **metrics, "probe_l2": l2}
    optimizer = trainer._optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer._checkpoint(model, optimizer, scheduler, None, 1, 1, 1, len(train_idx), [metrics])
    trainer.trial.report(1, metrics)
    return metrics
