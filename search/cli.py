"""The ``rpztune`` command line: thin handlers over the study engine.

Each handler parses nothing itself: ``main`` builds the parser from ``_COMMANDS`` and the handler's
docstring is its help. Library code raises typed errors; only ``main`` turns them into one line and exit
code 2 (``--debug`` shows the traceback). Handlers import their heavy modules (torch, timm, plotly, the
engine) themselves, so ``--help`` and light commands start fast (tests/search_tests/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import shutil
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy

import objectives
from objectives import DataError, TaskError
from objectives.training.allocator import keep_freed_memory
from reports.write import PLOTLYJS_MODES
from search.delivery.sandbox import SandboxUnavailable
from search.engine.algorithms import PRUNERS, SAMPLERS
from search.engine.storage import (
    DEFAULT_STORAGE,
    StorageError,
    check_writable,
    open_existing,
    study_dirname,
)
from search.engine.study import StudyError
from search.engine.workers import WorkerError, exit_code, raise_on_sigterm
from search.pipeline.budget import STAGES
from spaces import SpaceError

if TYPE_CHECKING:
    import optuna

    from search.delivery.validate import Limits, Report
    from search.engine.study import RunSummary
    from search.selection.winner import Winner

__all__ = ["main"]

USER_ERRORS = (
    TaskError,
    SpaceError,
    DataError,
    StorageError,
    StudyError,
    WorkerError,
    SandboxUnavailable,
    ValueError,
    FileNotFoundError,
)


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a study of TASK through the pipeline within --timeout seconds (the whole command's
    budget): search, confirm the top trials against the reference, refit the winner, ensemble where
    confirmation shows a gain (--stages search: the search alone). --trials N: the search's trials."""
    from search.pipeline.budget import parse_stages
    from search.pipeline.run import run_pipeline

    stages = parse_stages(args.stages)
    if args.confirm is not None and args.confirm < 1:
        raise ValueError(f"--confirm must be at least 1, got {args.confirm}")
    result = run_pipeline(
        args.task,
        stages=stages,
        started=_STARTED[0],
        top=args.confirm,
        log=lambda line: print(line, flush=True),
        on_search=lambda summary: _print_summary(summary, args.storage, pipeline=stages != ("search",)),
        study_name=args.study,
        space_file=args.space,
        overrides=args.set,
        baseline=not args.no_baseline,
        **_same_names(args, "storage", "sampler", "pruner", "seed", "data", "heartbeat_grace"),
        **_execution(args),
    )
    if "search" not in stages or not result.searched:
        _print_summary(result.summary, args.storage, pipeline=stages != ("search",))
    if stages != ("search",) and result.summary.best_trial is not None:
        name = result.summary.study_name
        print(_winner_line(args.storage, name, args.checkpoints))
        print(_hint("export", *_study_args(name, args.storage), "--out", _results(name)))
    if stages != ("search",):
        print(result.time_line)
    return 0


def _winner_line(storage: str, study: str, checkpoints: str | None) -> str:
    """What export will write, with the figure to expect (the confirmed one when there is one)."""
    from search.selection.ensemble import chosen_ensemble
    from search.selection.winner import find_winner

    winner = find_winner(storage, study, checkpoints=checkpoints)
    line = f"export writes {winner.describe()}"
    chosen = chosen_ensemble(winner.study)
    if chosen is not None:
        members = ", ".join(map(str, chosen["members"]))
        gain = f"paired gain {chosen['gain']:+.4f} ± {chosen['gain_se']:.4f}"
        what = f"the ensemble of trials {members}" if len(chosen["members"]) > 1 else "the winner alone"
        line += f"; as {what}{' with flip TTA' if chosen.get('flip') else ''} ({gain})"
    return line


def cmd_confirm(args: argparse.Namespace) -> int:
    """Re-train the --top K best trials of a study on fresh --folds F (default 5; mynet: --seeds 2), store
    each estimate (mean ± sd) and the confirmed winner (noise-aware rule), then refit it (numpy-mlp,
    finetune); export, submit and evaluate then use it. A killed run continues where it stopped."""
    return _confirm(args, args.study, args.top, args.folds, args.seeds)


def _confirm(args: argparse.Namespace, study: str, top: int, folds: int | None, seeds: int | None) -> int:
    from search.engine.study import load_study
    from search.selection.confirm import confirm
    from search.selection.refit import refit

    result = confirm(
        args.storage, study, top=top, folds=folds, seeds=seeds, workers=args.workers, data=args.data,
        device=args.device, log=lambda line: print(line, flush=True),
    )  # fmt: skip
    print(f"trained {result.trained} replicates; confirmed ranking ({result.scheme}s: {result.count}):")
    base = (result.reference or {}).get("trial")
    for estimate in result.ranking:
        mark = "*" if estimate is result.winner else " "
        print(
            f" {mark} trial {estimate.trial:>4}: {estimate.mean:.4f} ± {estimate.sd:.4f} (search "
            f"{estimate.search_value:.4f}, {estimate.complexity} parameters, {estimate.epochs} epochs)"
            + (" baseline" if estimate.trial == base else "")
        )
    print(f"winner: trial {result.winner.trial}: {result.reason}")
    task = objectives.get_task(load_study(args.storage, study).user_attrs["task"])
    if result.reference is not None:
        print(result.reference["line"])
    if task.refit is None or not task.refit.quick:
        print(
            f"{_hint('refit', *_study_args(study, args.storage))} ({task.name}: minutes), then rpztune export"
        )
    else:
        done = refit(args.storage, study, result.winner.trial, data=args.data, checkpoints=args.checkpoints)
        print(
            f"refit of trial {done.trial}: {done.record['epochs']} epochs (confirmed) on "
            f"{done.record['n_train']} images, {done.record['seconds']:.1f} s; wrote {done.path}"
        )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join an existing study (its task, space and data path come from the study) and run trials."""
    from search.engine.study import join_study

    summary = join_study(args.study, storage=args.storage, data=args.data, **_execution(args))
    _print_summary(summary, args.storage)
    return 0


_SUBMIT_STUDIES = ("numpy_study", "mynet_study", "finetune_study", "fcnet_study")  # submit's studies


def _same_names(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options ``names`` as keyword arguments of a function whose parameters have the same names."""
    return {name: getattr(args, name) for name in names}


def _execution(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_trials": args.trials,
        "timeout": args.timeout,
        "workers": args.workers,
        "threads": args.threads,
        "checkpoints": args.checkpoints,
        "keep_top": args.keep_top,
        "device": args.device,
        "progress": False if args.quiet else None,
    }


def _hint(*argv: str) -> str:
    """A next command the user can paste into a shell: every argument quoted."""
    return "next: " + shlex.join(["rpztune", *argv])


def _study_args(study: str, storage: str) -> list[str]:
    return ["--study", study] + ([] if storage == DEFAULT_STORAGE else ["--storage", storage])


def _results(study: str) -> str:
    return f"results/{study_dirname(study)}"


def _print_summary(summary: RunSummary, storage_url: str, *, pipeline: bool = False) -> None:
    """The search's outcome; ``pipeline``: its best value is a single split's, and confirmation follows."""
    for line in summary.at_deadline:
        print(line)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(summary.counts.items()))
    print(
        f"study {summary.study_name!r} in {summary.storage}: {summary.new_trials} new trials; total {counts}"
    )
    if summary.best_trial is None:
        if not summary.reasons:
            print("no trial completed: run again with more --trials or a longer --timeout")
        else:
            print("no trial completed; how the trials ended (the most frequent first):")
            for reason, n in sorted(summary.reasons.items(), key=lambda item: -item[1])[:5]:
                print(f"  {n} trial(s): {reason}")
    elif pipeline:
        print(
            f"best search value: {summary.metric} {summary.best_value:.4f} (trial {summary.best_trial}; one "
            "validation split, before confirmation)"
        )
    else:
        print(f"best {summary.metric} {summary.best_value:.4f} (trial {summary.best_trial})")
        print(
            _hint(
                "export", *_study_args(summary.study_name, storage_url), "--out", _results(summary.study_name)
            )
        )


def cmd_status(args: argparse.Namespace) -> int:
    """List the studies in a storage with trial counts by state and best values."""
    from reports.tables import studies_frame

    frame = studies_frame(_existing_storage(args.storage))
    if frame.empty:
        print(f"no studies in {args.storage}")
    else:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 80
        print(_status_table(frame, max(width, 40)))
    return 0


_STATUS_OPTIONAL = ("waiting", "running", "fail")  # dropped in this order, when all zero, to fit


def _status_table(frame: Any, width: int) -> str:
    """The studies table in ``width`` columns: one row of counts per study (all-zero columns and a task
    that repeats the study name dropped while too wide, then long study names cut with …), the metric,
    data source and confirmation on an indented line under it."""
    table = frame.drop(columns=["metric", "data", "confirmed"])
    table = table.rename(columns={"best_value": "best", "best_trial": "trial"})
    table["trial"] = table["trial"].astype("Int64")
    if _widest(table) > width and (table["task"] == table["study"]).all():
        table = table.drop(columns=["task"])
    for column in _STATUS_OPTIONAL:
        if _widest(table) > width and (table[column] == 0).all():
            table = table.drop(columns=[column])
    if _widest(table) > width and "task" in table:
        table = table.drop(columns=["task"])
    names = table["study"]
    keep = max(names.str.len().max() - (_widest(table) - width), 8)
    table["study"] = names.map(lambda v: v if len(v) <= keep else v[: keep - 1] + "…")
    lines = [line.rstrip() for line in _render(table).splitlines()]
    out = [lines[0]]
    for line, metric, data, confirmed in zip(
        lines[1:], frame["metric"], frame["data"], frame["confirmed"], strict=True
    ):
        detail = f"{metric}; data: {data}" if data else metric
        detail += f"; confirmed: {confirmed}" if confirmed else ""
        out += [line, *textwrap.wrap(detail, width, initial_indent="  ", subsequent_indent="    ")]
    return "\n".join(out)


def _render(table: Any) -> str:
    """``table`` as text: columns two spaces apart, each as wide as its widest cell, values left-aligned
    under their headers (pandas' ``to_string`` puts a one-row table's values a column off their headers)."""
    import pandas as pd  # loaded already by the caller's table

    def text(value: Any) -> str:
        return "–" if pd.isna(value) else f"{value:.4f}" if isinstance(value, float) else str(value)

    columns = [[str(name), *map(text, table[name])] for name in table.columns]
    widths = [max(map(len, column)) for column in columns]
    rows = zip(*columns, strict=True)
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def _widest(table: Any) -> int:
    return max(len(line) for line in _render(table).splitlines())


def cmd_export(args: argparse.Namespace) -> int:
    """Write the winner (or --trial N) of a study as the lab's files into --out (--standalone: no timm)."""
    from search.delivery.export import export
    from search.selection.ensemble import chosen_ensemble
    from search.selection.winner import find_winner

    winner = find_winner(args.storage, args.study, args.trial, checkpoints=args.checkpoints)
    chosen = None if args.single or winner.confirmed is None else chosen_ensemble(winner.study)
    if chosen is not None and args.ensemble is None and args.tta == "none":
        args.ensemble, args.tta = len(chosen["members"]), "flip" if chosen["flip"] else "none"
        print("the ensemble rpztune run chose on confirmation (--single: the winner alone)")
    if args.ensemble is not None or args.tta != "none":
        return _export_ensemble(args, winner)
    written = export(winner, args.out, data=args.data, standalone=args.standalone)
    print(f"winner: {winner.describe()}")
    print(_figures(winner, Path(args.out) / "winner.json"))
    for path in written:
        print(f"  wrote {path}")
    return 0


def _export_ensemble(args: argparse.Namespace, winner: Winner) -> int:
    from search.delivery.export_ensemble import export_ensemble

    if args.ensemble is None:  # --tta flip alone: the winner, averaged over flips
        args.ensemble = 1
    done = export_ensemble(
        winner, Path(args.out), args.ensemble, storage=args.storage, checkpoints=args.checkpoints,
        flip=args.tta == "flip", plain_torch=args.standalone,
    )  # fmt: skip
    print(f"winner: {winner.describe()}")
    print(f"{done.estimate.describe()}: written (the rule: a positive mean paired gain on confirmation)")
    members = ", ".join(f"trial {t} ({s})" for t, s in zip(done.estimate.members, done.sources, strict=True))
    print(f"members: {members}")
    print(
        f"CPU ms per 100 images (1 thread): winner alone {done.single_ms:.1f}, "
        f"ensemble {done.ensemble_ms:.1f} "
        f"({done.ensemble_ms / done.single_ms:.1f}x); rpztune validate --max-mynet-ms/--max-finetune-ms "
        "holds a submission to a limit"
    )
    for path in done.written:
        print(f"  wrote {path}")
    return 0


def _figures(winner: Winner, summary_file: Path) -> str:
    """One line: the winner's validation figures and the test figures its exporter measured."""
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    trial = winner.trial
    metric = winner.study.user_attrs.get("metric", "value")
    parts = [f"{key} {trial.user_attrs[key]:.4f}" for key in _PARTS if trial.user_attrs.get(key) is not None]
    validation = f"validation {metric} {trial.value:.4f}" + (f" ({', '.join(parts)})" if parts else "")
    validation += f", best epoch {trial.user_attrs.get('best_epoch')}"
    tests = [f"{key} {summary[key]:.4f}" for key in ("test_error", "test_accuracy") if key in summary]
    if tests:
        test = f"{', '.join(tests)} on {summary.get('n_test')} test images (never used for tuning)"
    else:
        test = "no test split (the lab's test set is private; rpztune evaluate --data FOLDER scores photos)"
    return f"trial {trial.number} of {winner.study.study_name!r}: {validation}; {test}"


_PARTS = ("orig_acc", "aug_acc", "new_acc")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the weights export writes for the winner (or --trial N): its stored refit's, else the trial's
    own (--trial-weights: always the trial's), on the test split of --data; print one JSON line."""
    from search.selection.refit import find_refit
    from search.selection.winner import evaluate, find_winner

    winner = find_winner(args.storage, args.study, args.trial, checkpoints=args.checkpoints)
    refit = None if args.trial_weights else find_refit(winner)
    weights = None if refit is None else refit[1]
    print(f"winner: {winner.describe()}", file=sys.stderr)  # stdout stays one JSON line
    result = evaluate(winner, args.data, weights)
    print(f"weights: the {result['weights']}'s ({(weights or winner.checkpoint).name})", file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_refit(args: argparse.Namespace) -> int:
    """Retrain the winner (or --trial N) of a study on its train + validation images (or --data-fraction F
    of the training images plus the validation images) for its best epoch count; export then uses it."""
    from search.selection.refit import refit

    check_writable(args.storage, args.checkpoints)
    result = refit(
        args.storage,
        args.study,
        args.trial,
        **_same_names(args, "data", "data_fraction", "device", "seed", "checkpoints", "epochs", "teachers"),
    )
    done = result.record
    tests = [f"{k} {done[k]:.4f}" for k in ("test_accuracy", "test_error") if done.get(k) is not None]
    print(
        f"refit of trial {result.trial} of {result.study!r}: {done['epochs']} epochs on {done['n_train']} "
        f"images ({done['device']}, {done['seconds']:.0f} s)"
        + (f"; {', '.join(tests)} (never used for tuning)" if tests else "")
    )
    print(f"  wrote {result.path}; study attribute {result.attr!r} records it")
    print(_hint("export", *_study_args(result.study, args.storage), "--out", _results(result.study)))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Write the lab's submission zip (--out) from the winners of the numpy-mlp, mynet and finetune studies
    and an FCNet study (a short one is run when there is none), then validate it like `rpztune validate`.
    With --timeout T and --data DIR: first run the three studies through the pipeline within T seconds."""
    from search.delivery.submit import build_submission
    from search.delivery.validate import validate

    runs = None
    if args.timeout is not None:
        runs = _submit_studies(args)
    submission = build_submission(
        args.storage,
        args.out,
        **_same_names(args, *_SUBMIT_STUDIES, "standalone", "checkpoints", "ensemble", "single"),
        flip=args.tta == "flip",
        log=lambda line: print(line, flush=True),
    )
    print(f"wrote {submission.path}")
    for name, source in submission.sources.items():
        print(f"  {name}: {source}")
    code = _print_report(validate(submission.path, _limits(args)))
    if runs is not None:
        _submit_progress(args).unlink(missing_ok=True)
        runs.seconds["fcnet, zip and validate"] = time.time() - runs.finish_started
        print(runs.describe(time.time() - _STARTED[0], args.timeout))
    return code


def _submit_progress(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    return out.with_name(f".{out.name}.progress.json")


def _submit_studies(args: argparse.Namespace) -> Any:
    """Run the three studies within the budget of ``submit --timeout`` (``search/pipeline/submit.py``)."""
    from search.pipeline.submit import run_studies

    if args.data is None:
        raise ValueError(
            "--timeout runs the three studies: give --data DIR (MNIST, FashionMNIST, dogs_and_cats)"
        )
    if not (args.timeout > 0):
        raise ValueError(f"--timeout must be positive, but got {args.timeout}")
    if not Path(args.out).parent.is_dir():
        raise FileNotFoundError(f"folder {str(Path(args.out).parent)!r} of --out does not exist")
    check_writable(args.storage, args.checkpoints)
    studies = {"numpy": args.numpy_study, "mynet": args.mynet_study, "finetune": args.finetune_study}
    overrides: dict[str, list[str]] = {}
    for text in args.set:
        task, sep, assignment = text.partition(":")
        if not sep or task not in objectives.task_names():
            raise ValueError(
                f"--set {text!r}: write TASK:KEY=VALUE, TASK one of {', '.join(objectives.task_names())}"
            )
        overrides.setdefault(task, []).append(assignment)
    runs = run_studies(
        args.storage, args.data, args.timeout, studies=studies, progress=_submit_progress(args),
        started=_STARTED[0], seed=args.seed, workers=args.workers, checkpoints=args.checkpoints,
        n_trials=args.trials, overrides=overrides, log=lambda line: print(line, flush=True),
    )  # fmt: skip
    runs.finish_started = time.time()
    return runs


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a submission zip as the upload system would use it: the lab's files at the root, the checkpoints
    read by the host, then the zip's code in a sandbox answering the host's questions on inputs it chose (the
    numpy layers, MyNet, classify, FinetuneNet), judged by the host: outputs, accuracy on labelled images
    (--data), CPU times. Exit code 0: PASS; 1: a check failed; 3: none failed but some could not be judged
    (INCOMPLETE, e.g. FinetuneNet's accuracy without photos), which is not a pass."""
    from search.delivery.validate import validate

    return _print_report(validate(args.zip, _limits(args)))


def _limits(args: argparse.Namespace) -> Limits:
    from search.delivery.sandbox import SandboxLimits
    from search.delivery.validate import Limits

    data = getattr(args, "data", None)
    return Limits(
        zip_mb=args.max_zip_mb,
        file_mb=args.max_file_mb,
        mynet_ms=args.max_mynet_ms,
        finetune_ms=args.max_finetune_ms,
        threads=args.threads,
        strict_imports=args.strict_imports,
        sandbox=SandboxLimits(
            seconds=args.sandbox_timeout, memory_mb=args.max_memory_mb, processes=args.max_processes
        ),
        data=Path(data) if data is not None else None,
    )


def _print_report(report: Report) -> int:
    print(f"validate {report.path}")
    for check in report.checks:
        print(f"  {check.mark}  {check.name}: {check.detail}")
    failed, unchecked = report.failed, report.unchecked
    if failed:
        names = "; ".join(c.name for c in failed[:6]) + ("; ..." if len(failed) > 6 else "")
        print(f"FAIL: {len(failed)} of {len(report.checks)} checks failed: {names}")
        return 1
    passed = sum(c.ok is True for c in report.checks)
    if unchecked:
        names = "; ".join(c.name for c in unchecked)
        print(f"INCOMPLETE (not a pass): {passed} checks passed, {len(unchecked)} unchecked: {names}")
        return 3
    print(f"PASS: {passed} checks passed")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write an HTML page per study and an index.html comparing all studies into --out (only reads the
    storage); --csv/--parquet write each study's trials and per-epoch curves tables instead."""
    from reports.write import storage_label, write_reports, write_tables
    from search.engine.study import load_study, study_dir

    storage = _existing_storage(args.storage)
    studies = None
    if args.study is not None:
        load_study(args.storage, args.study)  # a StudyError naming the studies there
        studies = [args.study]
    checkpoint_dir = lambda name: study_dir(args.storage, name, args.checkpoints)  # noqa: E731
    if args.csv or args.parquet:
        fmt = "csv" if args.csv else "parquet"
        written = write_tables(storage, args.out, studies=studies, fmt=fmt, checkpoint_dir=checkpoint_dir)
    else:
        written = write_reports(
            storage,
            args.out,
            studies=studies,
            checkpoint_dir=checkpoint_dir,
            plotlyjs=args.plotlyjs,
            storage_name=storage_label(args.storage),
        )
    for path in written:
        print(f"  wrote {path}")
    if not (args.csv or args.parquet):
        print(f"open {Path(args.out) / 'index.html'}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the storage (optional extra: pip install 'rpztune[dashboard]')."""
    from reports.dashboard import require_dashboard, run_dashboard
    from reports.write import storage_label

    require_dashboard()
    storage = _existing_storage(args.storage)
    print(f"optuna-dashboard for {storage_label(args.storage)} on http://{args.host}:{args.port}/ "
          "(Ctrl-C stops it)", flush=True)  # fmt: skip
    try:
        run_dashboard(storage, host=args.host, port=args.port)
    except KeyboardInterrupt:
        print("dashboard stopped")
    return 0


def _existing_storage(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must exist already: reading commands never create an empty one."""
    return open_existing(url)


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help=f"one of: {', '.join(objectives.task_names())}")
    parser.add_argument("--study", help="study name (default: the task name)")
    parser.add_argument("--sampler", choices=SAMPLERS, help="default: the study's, else tpe")
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        help="default: the study's, else the task's (mynet: rungs, finetune: asha, numpy-mlp: none)",
    )
    parser.add_argument("--seed", type=int, help="sampler seed (reproducible studies)")
    parser.add_argument("--data", help="data path (default: download when possible, else bundled sample)")
    parser.add_argument("--space", help="TOML file overriding the search space")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one space key"
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="do not start a new study from the task's known-good configuration",
    )
    parser.add_argument(
        "--heartbeat-grace",
        type=int,
        metavar="SEC",
        help="fail and retry a trial whose worker (on any machine) sent no heartbeat for SEC seconds; "
        "stored with the study (default 30; PostgreSQL/MySQL/SQLite)",
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"the pipeline's stages (default {','.join(STAGES)}; 'search': the search alone)",
    )
    parser.add_argument(
        "--confirm", type=int, metavar="K", help="confirm at most K trials (default: the task's, e.g. 3)"
    )
    _add_execution(parser)


def _add_confirm(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True)
    parser.add_argument("--top", type=int, default=5, help="how many of the best trials (default 5)")
    plan = parser.add_mutually_exclusive_group()
    plan.add_argument("--folds", type=int, help="k-fold CV over train + validation (numpy-mlp, finetune)")
    plan.add_argument("--seeds", type=int, help="re-train on the study's split with R fresh seeds")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--data", help="data path (default: the study's own data)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device")


def _add_worker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True)
    parser.add_argument("--data", help="this machine's copy of the study's data (default: the stored path)")
    _add_execution(parser)


def _add_execution(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, help="trials this invocation runs, across all its workers")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds: the command's wall-clock budget; trials plan to end by it and stop at it",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--threads", type=int, help="BLAS/torch threads per worker (default: cores // workers)"
    )
    parser.add_argument("--keep-top", type=int, default=5, help="checkpoints kept (best trials)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device")
    parser.add_argument("--quiet", action="store_true", help="no live progress lines")


def _add_report(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--study", help="report this study only (the index still lists every study)")
    which.add_argument("--all", action="store_true", help="report every study (the default)")
    parser.add_argument("--out", default="rpztune-reports", help="output folder (default rpztune-reports)")
    tables = parser.add_mutually_exclusive_group()
    tables.add_argument("--csv", action="store_true", help="write trials and curves tables as CSV instead")
    tables.add_argument("--parquet", action="store_true", help="the same as Parquet (needs pyarrow)")
    parser.add_argument(
        "--plotlyjs",
        default="inline",
        choices=PLOTLYJS_MODES,
        help="inline: plotly.js in every page, each page opens alone (default); beside: one plotly.min.js",
    )


def _add_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--numpy-study", default="numpy-mlp", help="numpy-mlp study (default numpy-mlp)")
    parser.add_argument("--mynet-study", default="mynet", help="mynet study (default mynet)")
    parser.add_argument("--finetune-study", default="finetune", help="finetune study (default finetune)")
    parser.add_argument(
        "--fcnet-study", default="fcnet", help="a mynet study with stages=0 (default fcnet; run when missing)"
    )
    parser.add_argument("--out", default="submission.zip", help="the zip to write (default submission.zip)")
    parser.add_argument("--standalone", action="store_true", help="FinetuneNet in plain torch (no timm)")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds: run the three studies through the pipeline first, the whole command within them "
        "(needs --data DIR holding MNIST, FashionMNIST and dogs_and_cats; a rerun continues)",
    )
    parser.add_argument("--seed", type=int, help="with --timeout: the studies' sampler seed")
    parser.add_argument("--workers", type=int, default=1, help="with --timeout: worker processes (default 1)")
    parser.add_argument(
        "--trials", type=int, help="with --timeout: each study's search trials (default: its time)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="TASK:KEY=VALUE",
        help="with --timeout: override one key of a new study's space, e.g. mynet:epochs=10",
    )  # fmt: skip
    _add_ensemble(parser)
    _add_limits(parser, budget=True)


def _add_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("zip", help="the submission zip")
    _add_limits(parser)


def _add_limits(parser: argparse.ArgumentParser, *, budget: bool = False) -> None:
    """validate's limits; ``budget``: ``--timeout`` is the command's budget (submit), the sandbox's limit is
    ``--sandbox-timeout``."""
    parser.add_argument("--max-zip-mb", type=float, help="fail when the zip is larger (MiB)")
    parser.add_argument("--max-file-mb", type=float, help="fail when a file in the zip is larger (MiB)")
    parser.add_argument("--max-mynet-ms", type=float, help="fail when MyNet takes longer per 100 images (ms)")
    parser.add_argument(
        "--max-finetune-ms", type=float, help="fail when FinetuneNet takes longer per 100 images (ms)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the timings (default 1)")
    parser.add_argument(
        "--strict-imports", action="store_true", help="fail when a file imports beyond the lab's modules"
    )
    sandbox = "the zip's code runs in a sandbox"
    names = ["--sandbox-timeout"] if budget else ["--timeout", "--sandbox-timeout"]
    parser.add_argument(
        *names, dest="sandbox_timeout", type=float, default=300, help=f"{sandbox}: its time limit, s (300)"
    )
    parser.add_argument("--max-memory-mb", type=int, default=8192, help=f"{sandbox}: address space (8192)")
    parser.add_argument("--max-processes", type=int, default=64, help=f"{sandbox}: processes+threads (64)")
    if not any("--data" in action.option_strings for action in parser._actions):
        parser.add_argument(
            "--data",
            help="judge accuracy on this data folder's labelled images (FashionMNIST/raw/, dogs_and_cats/); "
            "without it MyNet is judged on a shipped sample and FinetuneNet's accuracy is unchecked",
        )


def _add_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")


def _add_winner(parser: argparse.ArgumentParser, *, out: bool) -> None:
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial", type=int, help="a trial number instead of the best trial")
    parser.add_argument("--data", help="data path (default: the study's own data)", required=not out)
    if not out:
        parser.add_argument(
            "--trial-weights",
            action="store_true",
            help="score the trial's own checkpoint even when a refit is stored (export writes the refit)",
        )
    if out:
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument(
            "--standalone",
            action="store_true",
            help="finetune: a pytorch_cnn.py that needs only torch (EfficientNet-Lite backbones, no timm)",
        )
        _add_ensemble(parser)


def _add_ensemble(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ensemble", type=int, metavar="K",
        help="mynet/finetune: average the confirmed winner and the next K-1 confirmed configurations, "
        "when confirmation shows the ensemble scoring higher",
    )  # fmt: skip
    parser.add_argument(
        "--tta", choices=("none", "flip"), default="none",
        help="finetune: average over left-right flipped photos too (alone: the winner with flips)",
    )  # fmt: skip
    parser.add_argument(
        "--single", action="store_true",
        help="the winner alone, not the ensemble rpztune run chose for it on confirmation",
    )  # fmt: skip


def _add_refit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial", type=int, help="a trial number instead of the best trial")
    parser.add_argument("--data", help="data path (default: the study's own data)")
    parser.add_argument(
        "--data-fraction",
        type=float,
        help="training share of the training images, validation images on top (default: the study's)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device")
    parser.add_argument("--seed", type=int, help="initialisation and shuffling seed (default: the trial's)")
    parser.add_argument(
        "--epochs", type=int, help="mynet: the refit's epochs (default: the study's refit_epochs setting)"
    )
    parser.add_argument(
        "--teachers",
        type=int,
        help="mynet: distil the refit from the average of the N best trials on the unlabelled images",
    )


_COMMANDS: dict[
    str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]
] = {
    "run": (cmd_run, _add_run),
    "worker": (cmd_worker, _add_worker),
    "status": (cmd_status, lambda p: None),
    "export": (cmd_export, lambda p: _add_winner(p, out=True)),
    "evaluate": (cmd_evaluate, lambda p: _add_winner(p, out=False)),
    "refit": (cmd_refit, _add_refit),
    "confirm": (cmd_confirm, _add_confirm),
    "submit": (cmd_submit, _add_submit),
    "validate": (cmd_validate, _add_validate),
    "report": (cmd_report, _add_report),
    "dashboard": (cmd_dashboard, _add_dashboard),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="rpztune", description="Hyperparameter search for the RPZ CNN lab.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (handler, add_arguments) in _COMMANDS.items():
        command = sub.add_parser(name, help=handler.__doc__, description=handler.__doc__)
        command.add_argument(
            "--storage", default=DEFAULT_STORAGE, help=f"storage URL (default {DEFAULT_STORAGE})"
        )
        command.add_argument("--checkpoints", help="checkpoint folder (default: beside the storage file)")
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
        add_arguments(command)
        command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rpztune`` console script."""
    _STARTED[0] = _process_start()  # a --timeout budget counts from the process's start
    args = build_parser().parse_args(argv)
    # A stop signal landing inside a database read makes SQLAlchemy log "Error closing cursor" with a
    # traceback through Python's last-resort handler; the interrupt itself is reported below, in one line.
    logging.getLogger("sqlalchemy").addHandler(logging.NullHandler())
    keep_freed_memory()  # in-process trials, refits and confirmations (objectives/training/allocator.py)
    try:
        with raise_on_sigterm():  # SIGTERM ends a run like Ctrl-C: trials FAIL, not left RUNNING
            return args.handler(args)
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rpztune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except sqlalchemy.exc.OperationalError as exc:
        if "full" not in str(exc):  # "database or disk is full": the disk holding the storage
            raise
        where = getattr(args, "storage", "the storage")
        print(f"rpztune {args.command}: error: no space left on the device holding {where}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine, not the input: a full disk, a read-only or forbidden folder
        if args.debug:
            traceback.print_exc()
        print(f"rpztune {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        how = "terminated (SIGTERM)" if exit_code(interrupt) == 143 else "interrupted"
        kept = "; finished trials are kept in the storage" if args.command in _RUNS_TRIALS else ""
        print(f"rpztune {args.command}: {how}{kept}", file=sys.stderr)
        return exit_code(interrupt)


_RUNS_TRIALS = ("run", "worker", "confirm")
_STARTED = [0.0]  # when main() began


def _process_start() -> float:
    """When this process started (Linux: from /proc, so a budget counts the interpreter's start and the
    imports), else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
    return min(time.time(), boot + ticks / os.sysconf("SC_CLK_TCK"))


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}; nothing partial was kept"
    return f"{exc.strerror or type(exc).__name__}{where}"


if __name__ == "__main__":
    sys.exit(main())
