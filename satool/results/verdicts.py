"""Verdicts: every finding of the paper judged on a run (or a study of several runs) by a stated rule,
after the model-health checks.

A verdict says *reproduces* only when the numbers support the finding beyond their noise, *does not
reproduce* when they clearly go the other way, and *inconclusive* otherwise, always with the reason.
``satool report`` saves a :class:`VerdictReport` as ``verdicts.csv`` (one row per finding) and
``verdicts.json`` (the health checks, the verdicts and the text of every rule used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from satool.results.files import Document, read_json, write_csv, write_json

REPRODUCES, DOES_NOT, INCONCLUSIVE = "reproduces", "does not reproduce", "inconclusive"
OUTCOMES = (REPRODUCES, DOES_NOT, INCONCLUSIVE)


@dataclass
class Verdict:
    """One finding judged: the claim, what the paper reports, what this run measured, the verdict,
    why, and the rule (a key of the report's rules). ``finding``: its number in the paper's list of
    findings (docs/findings.md); ``model``: the run it was judged on ('' = the study as a whole)."""

    claim: str
    paper: str
    this_run: str
    verdict: str  # REPRODUCES, DOES_NOT or INCONCLUSIVE
    reason: str
    rule: str
    finding: int | None = None
    model: str = ""

    def row(self) -> dict[str, str]:
        return {"finding": "" if self.finding is None else str(self.finding), "model": self.model,
                "claim": self.claim, "paper": self.paper, "this run": self.this_run, "verdict": self.verdict,
                "reason": self.reason, "rule": self.rule}

    @classmethod
    def from_document(cls, doc: Document) -> Verdict:
        verdict = doc.text("verdict")
        if verdict not in OUTCOMES:
            doc.fail(f"{doc.where}.verdict must be one of {', '.join(OUTCOMES)}, found {verdict!r}")
        finding = doc.text("finding", "")
        if finding and not finding.isdigit():
            doc.fail(f"{doc.where}.finding must be a number, found {finding!r}")
        return cls(doc.text("claim"), doc.text("paper"), doc.text("this run"), verdict, doc.text("reason"),
                   doc.text("rule"), int(finding) if finding else None, doc.text("model", ""))


@dataclass
class HealthCheckRow:
    name: str
    passed: bool | None  # None = not measured
    detail: str


@dataclass
class Health:
    """The model-health checks; ``passed`` only when every check was measured and passed."""

    checks: list[HealthCheckRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failure(self) -> str:
        """Why the gate is closed ('' when it is open)."""
        failed = [c.name for c in self.checks if c.passed is False]
        missing = [c.name for c in self.checks if c.passed is None]
        parts = ([f"failed: {', '.join(failed)}"] if failed else []) + (
            [f"not measured: {', '.join(missing)}"] if missing else [])
        return "; ".join(parts) if parts else ("" if self.checks else "no health checks were run")


@dataclass
class VerdictReport:
    """The health checks of each model, every verdict, and the rules they were judged by."""

    health: dict[str, Health]  # model name -> its checks
    verdicts: list[Verdict]
    rules: dict[str, str]
    # model name -> each pruning order against the random orders at the shares judged (the numbers
    # behind the pruning verdicts: share, task, by, drop, random_mean, random_spread, effect, versus_random)
    pruning: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    CSV: ClassVar[str] = "verdicts.csv"
    JSON: ClassVar[str] = "verdicts.json"

    @property
    def healthy(self) -> bool:
        return bool(self.health) and all(h.passed for h in self.health.values())

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        rows = [v.row() for v in self.verdicts]
        document = {"healthy": self.healthy,
                    "health": {name: [c.__dict__ for c in h.checks] for name, h in self.health.items()},
                    "verdicts": rows, "rules": self.rules, "pruning": self.pruning}
        return {"csv": write_csv(out / self.CSV, rows), "json": write_json(out / self.JSON, document)}

    @classmethod
    def load(cls, directory: str | Path) -> VerdictReport:
        file = Path(directory) / cls.JSON
        doc = Document(read_json(file), file)
        health = {}
        for name in doc.child("health").value:
            rows = []
            for check in doc.child("health").children(name):
                passed = check.raw("passed")
                if passed is not None and not isinstance(passed, bool):
                    check.fail(f"{check.where}.passed must be true, false or null")
                rows.append(HealthCheckRow(check.text("name"), passed, check.text("detail")))
            health[name] = Health(rows)
        rules = doc.child("rules").value
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in rules.items()):
            doc.fail("rules must map names to text")
        pruning = doc.child("pruning", {}).value
        if not all(isinstance(v, list) and all(isinstance(r, dict) for r in v) for v in pruning.values()):
            doc.fail("pruning must map model names to lists of rows")
        return cls(health, [Verdict.from_document(v) for v in doc.children("verdicts")], dict(rules), dict(pruning))
