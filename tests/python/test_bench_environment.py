"""The environment record of benchmark results: the source commit is the one the op library was built from
(written by the build next to the library), else $LIGHTHOUSE_COMMIT, else 'unknown'; git is never asked at run
time, so a package installed inside another checkout cannot record that checkout's commit."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from lighthouse import _library
from lighthouse.bench import environment

REPO = Path(__file__).resolve().parents[2]


def test_the_recorded_commit_wins(tmp_path, monkeypatch):
    (tmp_path / environment.COMMIT_FILE).write_text("0123abcd\n")
    monkeypatch.setenv(environment.COMMIT_ENV, "from-the-environment")
    assert environment.git_commit(tmp_path) == "0123abcd"


def test_without_a_record_the_environment_then_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv(environment.COMMIT_ENV, "from-the-environment")
    assert environment.git_commit(tmp_path) == "from-the-environment"
    (tmp_path / environment.COMMIT_FILE).write_text("\n")  # the build could not tell
    assert environment.git_commit(tmp_path) == "from-the-environment"
    monkeypatch.delenv(environment.COMMIT_ENV)
    assert environment.git_commit(tmp_path) == "unknown"


def test_git_is_not_asked_at_run_time(tmp_path, monkeypatch):
    commands = []
    popen = subprocess.Popen

    class Recorded(popen):
        def __init__(self, args, *rest, **kwargs):
            commands.append(args)
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.delenv(environment.COMMIT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert environment.describe(torch.device("cpu"), [])["commit"] == environment.git_commit()
    assert not [c for c in commands if "git" in str(c)], commands


def test_the_loaded_library_records_a_commit_of_this_repository():
    recorded_file = _library.library_path().parent / environment.COMMIT_FILE
    if not recorded_file.is_file():
        pytest.skip(f"no {environment.COMMIT_FILE} next to the op library (built before builds recorded it)")
    recorded = recorded_file.read_text().strip()
    if not (REPO / ".git").exists():
        pytest.skip("the tests do not run from a git checkout")
    assert recorded, "the build ran in a git checkout but recorded no commit"
    commit = recorded.removesuffix("+uncommitted")  # built from a tree with changes to tracked files
    known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], check=False)
    assert known.returncode == 0, f"{recorded} is not a commit of {REPO}"


def _write_build_commit(source: Path, output: Path, env=None) -> str:
    subprocess.run(["cmake", f"-DSOURCE_DIR={source}", f"-DOUTPUT={output}", "-P",
                    str(REPO / "cmake" / "WriteBuildCommit.cmake")], check=True, env=env)
    return output.read_text().strip()


def test_the_build_records_head_and_marks_uncommitted_changes(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "kernel.cu").write_text("one\n")
    subprocess.run([*git, "add", "kernel.cu"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    output = tmp_path / environment.COMMIT_FILE
    assert _write_build_commit(repo, output) == head
    (repo / "untracked.txt").write_text("not part of the build\n")
    assert _write_build_commit(repo, output) == head
    (repo / "kernel.cu").write_text("two\n")
    assert _write_build_commit(repo, output) == head + "+uncommitted"
    # A folder inside a checkout is not that checkout: the environment's commit, else nothing.
    (repo / "inner").mkdir()
    assert _write_build_commit(repo / "inner", output, env={**os.environ, environment.COMMIT_ENV: "given"}) == "given"
