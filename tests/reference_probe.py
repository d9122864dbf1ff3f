"""The probe training of satool 0.1 before probes were grouped (commit 93d51d7), kept as the slow reference
the grouped trainer must match bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np

from satool.analysis.probing.classifiers import (
    IMPROVEMENT,
    _make_classifier,
    converged,
    validation_split,
)


def reference_train_and_score(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    *,
    kind: str,
    seed: int,
    settings,
    device: str = "cpu",
    report: dict[str, Any] | None = None,
    groups: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Train ``kind`` ('linear' or 'mlp') with Adam + cross-entropy; return (test accuracy, predictions).

    Early stopping on held-out training data: ``settings.validation_fraction`` of the training
    utterances (``groups``: the utterance index of each row; without it, of the rows) are kept out
    of the fit, their classification error and loss are measured every ``settings.eval_every`` steps,
    training stops once neither has improved for ``settings.patience`` measurements (:func:`converged`;
    or after ``settings.steps``), and the parameters with the lowest held-out error are the ones
    scored. Inputs are standardised with the fitted rows' mean/std. Deterministic for a seed.
    ``report`` (a dict) receives the convergence check (:func:`converged`) and ``steps_run``,
    ``best_step``, ``validation_error``, ``train_loss`` (mean training loss over the last
    ``eval_every`` steps).
    """
    import torch

    fit, held = validation_split(len(y_train), groups, settings.validation_fraction, seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = x_train[fit].mean(axis=0, keepdims=True)
    std = x_train[fit].std(axis=0, keepdims=True) + 1e-5

    def tensor(x: np.ndarray):
        return torch.from_numpy(((x - mean) / std).astype(np.float32)).to(device)

    xt, yt = tensor(x_train[fit]), torch.from_numpy(y_train[fit].astype(np.int64)).to(device)
    xv, yv = tensor(x_train[held]), torch.from_numpy(y_train[held].astype(np.int64)).to(device)
    model = _make_classifier(kind, xt.shape[1], n_classes, settings.hidden_units).to(device)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    n = xt.shape[0]
    batch = min(settings.batch_size, n)
    errors: list[float] = []
    losses: list[float] = []
    best, best_step, best_state = float("inf"), 0, None
    recent = torch.zeros(settings.eval_every)
    step = 0
    model.train()
    while step < settings.steps:
        index = torch.randint(0, n, (batch,), generator=generator).to(device)
        loss = torch.nn.functional.cross_entropy(model(xt[index]), yt[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        recent[step % settings.eval_every] = loss.detach()
        step += 1
        if len(yv) == 0 or step % settings.eval_every:
            continue
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            errors.append(float((logits.argmax(-1) != yv).float().mean()))
            losses.append(float(torch.nn.functional.cross_entropy(logits, yv)))
        model.train()
        if errors[-1] < best * (1 - IMPROVEMENT):
            best, best_step = errors[-1], step
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if converged(errors, losses, settings.patience)["converged"]:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    if report is not None:
        report.update(converged(errors, losses, settings.patience))
        report.update(steps_run=step, best_step=best_step if best_state is not None else step,
                      validation_error=best if best_state is not None else float("nan"),
                      train_loss=float(recent[: min(step, settings.eval_every)].mean()))
    model.eval()
    with torch.no_grad():
        xs = tensor(x_test)
        predictions = torch.cat([model(chunk).argmax(-1) for chunk in xs.split(65536)]).cpu().numpy()
    accuracy = float((predictions == y_test).mean()) if len(y_test) else float("nan")
    return accuracy, predictions


