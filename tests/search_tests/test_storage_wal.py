"""An SQLite storage opened again in a process keeps that process's locks, so its commits survive another
process closing the database (a worker ending): SQLite deletes the WAL only when no process holds it open."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from search.engine.storage import check_writable, get_storage

pytestmark = pytest.mark.slow  # two Python subprocesses on one SQLite file (2.6 s)

WORKER = """
import sys, optuna
storage = optuna.storages.RDBStorage(sys.argv[1])
optuna.load_study(study_name="s", storage=storage).set_user_attr("worker", 2)
storage.engine.dispose()  # the worker's last connection closes
"""
READER = """
import json, sys, optuna
print(json.dumps(optuna.load_study(study_name="s", storage=sys.argv[1]).user_attrs))
"""


def test_commits_after_reopening_a_storage_survive_another_process_closing_it(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="s", storage=get_storage(url))
    study.set_user_attr("before", 1)
    get_storage(url)  # commands open the storage again and check that it is writable
    check_writable(url)
    subprocess.run([sys.executable, "-c", WORKER, url], check=True)
    assert (tmp_path / "studies.db-wal").exists(), "the WAL was deleted while this process had it open"
    study.set_user_attr("after", 3)
    read = subprocess.run([sys.executable, "-c", READER, url], check=True, capture_output=True, text=True)
    assert json.loads(read.stdout) == {"before": 1, "worker": 2, "after": 3}
