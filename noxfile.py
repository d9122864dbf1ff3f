"""Developer sessions: `python -m nox -s tests` (what CI runs), lint, demo, bench.

Every session installs everything it needs from this repository's own files:
satool with its extras, the example plugin in plugins/, and s3prl==0.4.18
without its dependencies (the reference implementation for parity tests;
its model code needs only torch, numpy and PyYAML).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"


def install_satool(session: nox.Session, extras: str) -> None:
    session.install("-e", f".[{extras}]")
    session.install("-e", "./plugins/satool-phonetics")


def install_reference(session: nox.Session) -> None:
    session.install("--no-deps", "s3prl==0.4.18")


def ensure_chromium(session: nox.Session) -> None:
    """Install Debian's headless Chromium for the report test where apt is usable."""
    if shutil.which("chromium") or os.environ.get("SATOOL_SKIP_CHROMIUM_INSTALL"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        session.log("apt-get not usable here; the browser test will be skipped")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            check=True, env=env, timeout=1200,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        session.log(f"could not install chromium ({exc}); the browser test will be skipped")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (CI runs exactly this)."""
    install_satool(session, "test")
    install_reference(session)
    ensure_chromium(session)
    session.run("python", "-m", "pytest", "tests", "plugins/satool-phonetics/tests", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff on the package, tests, benchmarks and the example plugin."""
    session.install("ruff>=0.4")
    session.run("ruff", "check", "satool", "tests", "benchmarks", "plugins", "noxfile.py")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The whole study on the generated corpus (pass --quick for the smoke version)."""
    install_satool(session, "synth")
    session.run("satool", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """All benchmarks; each prints a table of ratios measured in the same run."""
    install_satool(session, "test")
    install_reference(session)
    session.run("python", "benchmarks/run_all.py", *session.posargs)
