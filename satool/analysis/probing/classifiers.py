"""Training classifier probes, many at once.

A probe is an MLP with one hidden layer (or one linear layer) trained with Adam and cross-entropy
on one representation, stopped early on held-out training utterances, and scored on a test split
(:func:`train_classifiers`; the rule is in :func:`converged`). A pruning sweep or a probe of every
layer trains dozens of probes that differ only in their inputs: the same labels, the same rows, the
same held-out utterances, the same seed. Such probes form a *group*: their weights are stacked
(``[probe, ...]``) and trained by batched matrix products and one optimiser step, each probe on its
own inputs, each with its own early stopping; a probe that stops leaves the group and costs nothing
more.

Grouping changes nothing but the speed: every probe draws the same mini-batches, starts from the
same initial weights and sees exactly the floating-point operations it would see alone (batched
products compute each probe's slice with the same kernel; Adam is element-wise), so a probe's
numbers are bit-for-bit those of training it alone, which the tests check.

Precision: the matrix products run in ``settings.precision``. In ``"bfloat16"`` the inputs are
stored and multiplied in bfloat16 while the weights, Adam's state and the loss stay float32 (mixed
precision); scores differ from float32 by training noise, not by a bias (``benchmarks/bench_prune.py``
prints the differences beside the spread of random pruning orders). :func:`fastest_precision` picks
bfloat16 only where the hardware multiplies it natively.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IMPROVEMENT = 1e-3  # a held-out error counts as better when it is 0.1 % (relative) below the best so far


@dataclass
class ClassifierProblem:
    """One probe to train and score.

    Its training inputs are ``x_train[rows_train]`` (``x_train``: float32 ``[item, dim]``; several rows
    may name the same item, e.g. the 10 ms frames of one model step, so up-sampled inputs are never
    materialised), labels ``y_train[row]``, and ``groups[row]`` the utterance of each row (whole
    utterances are held out for early stopping); the same for the test split. ``kind``: ``'mlp'`` or
    ``'linear'``.
    """

    x_train: np.ndarray
    rows_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    rows_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    kind: str
    groups: np.ndarray | None = None

    @classmethod
    def of_rows(cls, x_train, y_train, x_test, y_test, n_classes: int, kind: str,
                groups: np.ndarray | None = None) -> ClassifierProblem:
        """A problem whose inputs are given row by row."""
        return cls(np.asarray(x_train), np.arange(len(x_train)), np.asarray(y_train), np.asarray(x_test),
                   np.arange(len(x_test)), np.asarray(y_test), n_classes, kind, groups)

    def structure(self) -> str:
        """Probes with the same structure (labels, rows, held-out groups, sizes, kind) train together."""
        digest = hashlib.sha1()
        digest.update(repr((self.kind, self.n_classes, self.x_train.shape[1], self.x_test.shape[1],
                            self.groups is None)).encode())
        for array in (self.rows_train, self.y_train, self.rows_test, self.y_test,
                      *(() if self.groups is None else (self.groups,))):
            digest.update(np.ascontiguousarray(array).view(np.uint8).tobytes())
        return digest.hexdigest()


@dataclass
class ClassifierResult:
    """Test accuracy, the test predictions and the training report of one probe (:func:`converged`'s
    fields plus ``steps_run``, ``best_step``, ``validation_error``, ``train_loss``, ``precision``)."""

    accuracy: float
    predictions: np.ndarray
    report: dict[str, Any]


def fastest_precision(device: str = "cpu") -> str:
    """``"bfloat16"`` where the device multiplies bfloat16 natively (a CUDA GPU that supports it, a
    CPU with AVX512-BF16 or AMX), else ``"float32"``: elsewhere bfloat16 is emulated and slower."""
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return "float32"
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"


def validation_split(n: int, groups: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit, rows to validate on): ``fraction`` of the groups (utterances) when there are at
    least 5 of them, else of the rows when there are at least 20, else nothing held out."""
    rng = np.random.default_rng(seed + 7919)
    rows = np.arange(n)
    if groups is not None and len(np.unique(groups)) >= 5:
        names = np.unique(groups)
        held_groups = rng.choice(names, size=max(1, round(fraction * len(names))), replace=False)
        held = np.isin(groups, held_groups)
        return rows[~held], rows[held]
    if n >= 20:
        held = np.zeros(n, bool)
        held[rng.choice(n, size=max(1, round(fraction * n)), replace=False)] = True
        return rows[~held], rows[held]
    return rows, rows[:0]


def converged(validation_errors: Sequence[float], validation_losses: Sequence[float], patience: int) -> dict[str, Any]:
    """Has training levelled off? Converged when neither the held-out error nor the held-out loss
    improved (by :data:`IMPROVEMENT`, relative) over the last ``patience`` measurements: the error
    alone stalls at chance for a probe that learns slowly, the loss alone rises for an over-confident
    probe whose accuracy still improves. Not judged (None) with fewer than ``patience + 1``
    measurements. ``loss_change``: relative change of the held-out error over the last ``patience``."""
    errors = np.asarray(validation_errors, float)
    if len(errors) < patience + 1:
        return {"converged": None, "loss_change": float("nan")}

    def last_improvement(values) -> int:
        best_value, best = float("inf"), 0
        for i, value in enumerate(values):
            if value < best_value * (1 - IMPROVEMENT):
                best_value, best = value, i
        return best

    stalled = all(last_improvement(v) < len(errors) - patience for v in (errors, validation_losses))
    before = errors[-patience - 1]
    change = float((errors[-1] - before) / before) if before > 0 else 0.0
    return {"converged": stalled, "loss_change": change}


def train_classifiers(problems: Sequence[ClassifierProblem], *, seed: int, settings, device: str = "cpu",
                      progress: Callable[[int], None] | None = None) -> list[ClassifierResult]:
    """Train and score every problem (``settings``: a ProbeSettings), in groups of the same structure;
    one result per problem, in order. ``progress(1)`` after each probe finishes."""
    results: list[ClassifierResult | None] = [None] * len(problems)
    groups: dict[str, list[int]] = {}
    for i, problem in enumerate(problems):
        groups.setdefault(problem.structure(), []).append(i)
    for members in groups.values():
        for i, result in zip(members, _train_group([problems[i] for i in members], seed, settings, device,
                                                   progress)):
            results[i] = result
    return results  # type: ignore[return-value]


class _Stack:
    """The stacked weights of a group of probes (one MLP or linear layer each), ``[probe, out, in]``
    like ``torch.nn.Linear``'s, with their Adam optimiser."""

    def __init__(self, kind: str, in_dim: int, n_classes: int, hidden_units: int, copies: int, settings, device):
        import torch

        proto = _make_classifier(kind, in_dim, n_classes, hidden_units)  # the seeded initial weights
        layers = [proto] if kind == "linear" else [proto[0], proto[2]]
        self.params = []
        for layer in layers:
            self.params.append(torch.nn.Parameter(layer.weight.detach()[None].repeat(copies, 1, 1).to(device)))
            self.params.append(torch.nn.Parameter(layer.bias.detach()[None, None].repeat(copies, 1, 1).to(device)))
        self.settings = settings
        self.optimiser = self._adam(self.params)

    def _adam(self, params):
        """Adam over the stacked weights, for-each (bit-for-bit the per-tensor loop, and faster)."""
        import torch

        return torch.optim.Adam(params, lr=self.settings.learning_rate, weight_decay=self.settings.weight_decay,
                                foreach=True)

    def __call__(self, x):
        """Float32 logits ``[probe, row, class]`` of inputs ``[probe, row, dim]``, multiplied in the
        inputs' dtype."""
        return _forward(self.params, x)

    def state(self, i: int) -> list:
        return [p.detach()[i].clone() for p in self.params]

    def load(self, i: int, state: list) -> None:
        import torch

        with torch.no_grad():
            for p, value in zip(self.params, state):
                p[i] = value

    def keep(self, kept: list[int]) -> None:
        """Drop every probe not in ``kept`` (positions), with its optimiser state."""
        import torch

        index = torch.tensor(kept, dtype=torch.long)
        old_state = self.optimiser.state
        new_params = [torch.nn.Parameter(p.detach()[index].clone()) for p in self.params]
        optimiser = self._adam(new_params)
        for old, new in zip(self.params, new_params):
            state = old_state.get(old)
            if state:
                optimiser.state[new] = {k: (v[index].clone() if k != "step" else v.clone()) for k, v in state.items()}
        self.params, self.optimiser = new_params, optimiser


def _make_classifier(kind: str, in_dim: int, n_classes: int, hidden_units: int):
    import torch

    if kind == "linear":
        return torch.nn.Linear(in_dim, n_classes)
    if kind == "mlp":
        return torch.nn.Sequential(
            torch.nn.Linear(in_dim, hidden_units), torch.nn.ReLU(), torch.nn.Linear(hidden_units, n_classes)
        )
    raise ValueError(f"unknown classifier {kind!r} (use 'linear' or 'mlp')")


def _train_group(problems: Sequence[ClassifierProblem], seed: int, settings, device: str,
                 progress: Callable[[int], None] | None) -> list[ClassifierResult]:
    """Train probes of one structure together (see the module docstring); each stops on its own."""
    import torch

    first = problems[0]
    fit, held = validation_split(len(first.y_train), first.groups, settings.validation_fraction, seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    scaled, scales = [], []
    for p in problems:  # each probe standardised with its own fitted rows' mean and std
        fitted = p.x_train[p.rows_train[fit]]
        mean = fitted.mean(axis=0, keepdims=True)
        std = fitted.std(axis=0, keepdims=True) + 1e-5
        scaled.append(((p.x_train - mean) / std).astype(np.float32))
        scales.append((mean, std))
    precision = fastest_precision(device) if settings.precision == "auto" else settings.precision
    dtype = getattr(torch, precision)
    x = torch.from_numpy(np.stack(scaled)).to(device=device, dtype=dtype)  # [probe, item, dim]
    del scaled
    fit_rows = torch.from_numpy(first.rows_train[fit].astype(np.int64)).to(device)
    yt = torch.from_numpy(first.y_train[fit].astype(np.int64)).to(device)
    xv = x[:, torch.from_numpy(first.rows_train[held].astype(np.int64)).to(device)]  # [probe, held row, dim]
    yv = torch.from_numpy(first.y_train[held].astype(np.int64)).to(device)
    stack = _Stack(first.kind, x.shape[-1], first.n_classes, settings.hidden_units, len(problems), settings, device)
    n = len(fit_rows)
    batch = min(settings.batch_size, n)
    count = len(problems)
    active = list(range(count))  # the probes still training, in the stack's order
    errors: list[list[float]] = [[] for _ in range(count)]
    losses: list[list[float]] = [[] for _ in range(count)]
    best = [float("inf")] * count
    best_step = [0] * count
    best_state: list[list | None] = [None] * count
    final_state: list[list | None] = [None] * count
    steps_run = [0] * count
    recent = torch.zeros(count, settings.eval_every)
    step = 0

    def finish(k: int, probe: int) -> None:
        steps_run[probe], final_state[probe] = step, stack.state(k)
        if progress is not None:
            progress(1)

    while step < settings.steps and active:
        index = torch.randint(0, n, (batch,), generator=generator).to(device)
        rows = fit_rows[index]
        logits = stack(x.index_select(1, rows))  # [probe, batch, class]
        per_probe = _mean_cross_entropy(logits, yt[index])
        stack.optimiser.zero_grad(set_to_none=True)
        per_probe.sum().backward()
        stack.optimiser.step()
        recent[active, step % settings.eval_every] = per_probe.detach().cpu()
        step += 1
        if len(yv) == 0 or step % settings.eval_every:
            continue
        stopped = []
        with torch.no_grad():
            val_logits = stack(xv)
            for k, probe in enumerate(active):
                errors[probe].append(float((val_logits[k].argmax(-1) != yv).float().mean()))
                losses[probe].append(float(torch.nn.functional.cross_entropy(val_logits[k], yv)))
                if errors[probe][-1] < best[probe] * (1 - IMPROVEMENT):
                    best[probe], best_step[probe] = errors[probe][-1], step
                    best_state[probe] = stack.state(k)
                if converged(errors[probe], losses[probe], settings.patience)["converged"]:
                    stopped.append(k)
        if stopped:
            for k in stopped:
                finish(k, active[k])
            kept = [k for k in range(len(active)) if k not in stopped]
            active = [active[k] for k in kept]
            if active:
                stack.keep(kept)
                kept_index = torch.tensor(kept, dtype=torch.long, device=x.device)
                x, xv = x[kept_index], xv[kept_index]  # only the probes still training are gathered
    for k, probe in enumerate(active):
        finish(k, probe)
    del x, xv

    results = []
    for probe, p in enumerate(problems):
        state = best_state[probe] if best_state[probe] is not None else final_state[probe]
        report = dict(converged(errors[probe], losses[probe], settings.patience))
        report.update(steps_run=steps_run[probe],
                      best_step=best_step[probe] if best_state[probe] is not None else steps_run[probe],
                      validation_error=best[probe] if best_state[probe] is not None else float("nan"),
                      train_loss=float(recent[probe, : min(steps_run[probe], settings.eval_every)].mean()),
                      precision=precision)
        mean, std = scales[probe]
        xs = torch.from_numpy(((p.x_test[p.rows_test] - mean) / std).astype(np.float32)).to(device=device,
                                                                                             dtype=dtype)
        with torch.no_grad():
            predictions = torch.cat([_logits(state, chunk).argmax(-1) for chunk in xs.split(65536)]).cpu().numpy() \
                if len(xs) else np.zeros(0, np.int64)
        accuracy = float((predictions == p.y_test).mean()) if len(p.y_test) else float("nan")
        results.append(ClassifierResult(accuracy, predictions, report))
    return results


def _mean_cross_entropy(logits, target):
    """Cross-entropy ``[probe]`` of logits ``[probe, row, class]`` against one target ``[row]``, each
    probe's mean over its rows (the gradient is bit-for-bit that of one mean per probe)."""
    import torch

    count, rows, classes = logits.shape
    losses = torch.nn.functional.cross_entropy(logits.reshape(count * rows, classes), target.repeat(count),
                                               reduction="none")
    return losses.view(count, rows).mean(1)


def _forward(params: Sequence, x):
    """Float32 logits ``[probe, row, class]`` of inputs ``[probe, row, dim]`` through stacked layers
    (``params``: weight ``[probe, out, in]``, bias ``[probe, 1, out]`` per layer), the products in
    ``x``'s dtype (a no-op cast in float32)."""
    import torch

    out = x
    pairs = list(zip(params[::2], params[1::2]))
    for k, (weight, bias) in enumerate(pairs):
        out = torch.baddbmm(bias.to(x.dtype), out, weight.to(x.dtype).transpose(1, 2))
        if k < len(pairs) - 1:
            out = torch.relu(out)
    return out.float()


def _logits(state: list, x):
    """One probe's logits ``[row, class]`` from its weights (``state``: weight, bias per layer, as
    :meth:`_Stack.state` returns them), computed as the stack computes them."""
    return _forward([p[None] for p in state], x[None])[0]
