"""
Tests for the install a developer makes: after ``pip install -e .`` the
checkout's root is on sys.path, as the commands run from it need, and
``trial tests`` runs from the root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parent.parent
# What an install of the project reads.
PROJECT_FILES = ["setup.cfg", "pyproject.toml", "README.md"]
PACKAGES = ["p2pstore", "web_monitor", "twisted/plugins"]
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")


def script_here(name: str) -> str:
    """
    A console script of the Python running the tests; fail (never skip)
    when it is missing.
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise AssertionError(f"no {name} next to {sys.executable} or on PATH: pip install twisted")
    return found


class EditableInstallTests(SynchronousTestCase):
    """
    ``pip install -e .`` into a new virtualenv, of a copy of the project.
    """

    timeout = 300

    def test_root_on_path(self):
        """
        The editable install puts the checkout's root on sys.path (rather
        than an import hook that maps p2pstore, web_monitor and
        twisted.plugins only): ``trial tests``, which does not add the
        current directory, imports the tests from it, and twistd finds
        twisted/plugins/p2pstore_plugin.py there.
        """
        work = Path(self.mktemp()).resolve()
        copy = work / "checkout"
        copy.mkdir(parents=True)
        for name in PROJECT_FILES:
            shutil.copy(REPO / name, copy / name)
        for package in PACKAGES:
            shutil.copytree(REPO / package, copy / package, ignore=SKIPPED)
        (copy / "tests").mkdir()
        shutil.copy(REPO / "tests" / "__init__.py", copy / "tests" / "__init__.py")
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        python = venv / "bin" / "python"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
             "--disable-pip-version-check", "-e", str(copy)],
            capture_output=True, text=True, timeout=240,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        # -I: neither the current directory nor PYTHONPATH, as a console script runs.
        probe = (
            "import importlib.util, json, sys; spec = importlib.util.find_spec('tests'); "
            "print(json.dumps([sys.path, spec and spec.origin]))"
        )
        done = subprocess.run(
            [str(python), "-I", "-c", probe], capture_output=True, text=True, cwd=work, timeout=60
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        path, tests = json.loads(done.stdout)
        self.assertIn(str(copy), path)
        self.assertEqual(tests, str(copy / "tests" / "__init__.py"))


class TrialFromRootTests(SynchronousTestCase):
    """
    The ``trial`` command, as the design runs the tests.
    """

    def test_trial_from_root(self):
        """
        ``trial tests.test_plugin`` run from the root of the checkout finds
        and passes the tests.
        """
        temp = Path(self.mktemp()).resolve()
        done = subprocess.run(
            [script_here("trial"), f"--temp-directory={temp}", "tests.test_plugin"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("PASSED (successes=2)", done.stdout)
