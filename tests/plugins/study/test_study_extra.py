"""Without the ``study`` extra: ``seqcl train`` works, ``seqcl study`` / ``compare`` say which extra to install.

A subprocess stands for ``pip install -e .`` without extras: the extra's
packages are made unimportable (``sys.modules[name] = None``) before seqcl is
imported, so any import of them by the core or at plugin load fails.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import TINY

EXTRA = ("optuna", "sqlalchemy", "scipy", "matplotlib")  # pyproject.toml's [project.optional-dependencies] study
WITHOUT_EXTRA = (f"import sys\nfor name in {EXTRA!r}:\n    sys.modules[name] = None\n"
                 "from seqcl.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def seqcl_without_extra(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, *args], capture_output=True, text=True,
                          cwd=cwd, env=os.environ.copy(), timeout=600)


def test_study_commands_name_the_extra(tmp_path):
    for args, missing in ((["study", "x.yaml"], "optuna, sqlalchemy, scipy, matplotlib"),
                          (["study", "report", "runs/x"], "scipy, matplotlib"),
                          (["compare", "a", "b"], "scipy")):
        done = seqcl_without_extra(*args, cwd=tmp_path)
        command = " ".join(a for a in args if a in ("study", "report", "compare"))
        assert done.returncode == 2, done.stderr
        assert done.stderr == (f"error: `seqcl {command}` needs the 'study' extra ({missing} not installed): "
                               "pip install 'seqcl[study]'\n")
    helped = seqcl_without_extra("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "study" in helped.stdout and "compare" in helped.stdout


def test_train_and_plugins_work_without_the_extra(tmp_path, tiny_file):
    listed = seqcl_without_extra("plugins", cwd=tmp_path)
    assert listed.returncode == 0 and "broken" not in listed.stdout and "warning" not in listed.stderr
    trained = seqcl_without_extra("train", "--dataset", str(tiny_file), *TINY, "--epochs", "1", "--set", "train.threads=1",
                                  "--set", f"run.dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "best epoch 1 of 1" in trained.stdout
