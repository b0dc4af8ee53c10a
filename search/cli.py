"""The ``rpztune`` command line: thin handlers over the study engine.

Each handler parses nothing itself: ``main`` builds the parser from ``_COMMANDS`` and the handler's
docstring is its help. Library code raises typed errors; only ``main`` turns them into one line and exit
code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence

import objectives
from objectives import DataError, TaskError
from reports import studies_frame
from spaces import SpaceError

from .algorithms import PRUNERS, SAMPLERS
from .export import export
from .storage import DEFAULT_STORAGE, StorageError, get_storage
from .study import StudyError, run_study
from .winner import evaluate, find_winner

__all__ = ["main"]

USER_ERRORS = (TaskError, SpaceError, DataError, StorageError, StudyError, ValueError, FileNotFoundError)


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a study of TASK: --trials N adds N trials to it."""
    summary = run_study(
        args.task,
        study_name=args.study,
        storage=args.storage,
        n_trials=args.trials,
        timeout=args.timeout,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        data=args.data,
        space_file=args.space,
        overrides=args.set,
        checkpoints=args.checkpoints,
        keep_top=args.keep_top,
        device=args.device,
        progress=not args.quiet,
    )
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(summary.counts.items()))
    print(
        f"study {summary.study_name!r} in {summary.storage}: {summary.new_trials} new trials; total {counts}"
    )
    if summary.best_trial is None:
        print("no trial completed yet: run again with more --trials or a longer --timeout")
    else:
        print(f"best {summary.metric} {summary.best_value:.4f} (trial {summary.best_trial})")
        storage = "" if args.storage == DEFAULT_STORAGE else f" --storage {args.storage}"
        print(
            f"next: rpztune export --study {summary.study_name}{storage} --out results/{summary.study_name}"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """List the studies in a storage with trial counts by state and best values."""
    frame = studies_frame(get_storage(args.storage))
    if frame.empty:
        print(f"no studies in {args.storage}")
    else:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the winner (or --trial N) of a study as the lab's files into --out."""
    winner = find_winner(args.storage, args.study, args.trial, checkpoints=args.checkpoints)
    written = export(winner, args.out, data=args.data)
    test = winner.trial.user_attrs.get("test_error")
    test_text = "" if test is None else f", test_error {test:.4f} (never used for tuning)"
    print(
        f"trial {winner.trial.number} of {args.study!r}: "
        f"{winner.study.user_attrs.get('metric', 'value')} {winner.trial.value:.4f}{test_text}"
    )
    for path in written:
        print(f"  wrote {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the winner (or --trial N) on the test split of --data; print one JSON line."""
    winner = find_winner(args.storage, args.study, args.trial, checkpoints=args.checkpoints)
    print(json.dumps(evaluate(winner, args.data)))
    return 0


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help=f"one of: {', '.join(objectives.task_names())}")
    parser.add_argument("--study", help="study name (default: the task name)")
    parser.add_argument("--trials", type=int, help="trials to add in this run")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    parser.add_argument("--pruner", default="asha", choices=PRUNERS)
    parser.add_argument("--seed", type=int, help="sampler seed (reproducible studies)")
    parser.add_argument("--data", help="data path (default: download when possible, else bundled sample)")
    parser.add_argument("--space", help="TOML file overriding the search space")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one space key"
    )
    parser.add_argument("--keep-top", type=int, default=5, help="checkpoints kept (best trials)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device")
    parser.add_argument("--quiet", action="store_true", help="no per-trial progress lines")


def _add_winner(parser: argparse.ArgumentParser, *, out: bool) -> None:
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial", type=int, help="a trial number instead of the best trial")
    parser.add_argument("--data", help="data path (default: the study's own data)", required=not out)
    if out:
        parser.add_argument("--out", required=True, help="output folder")


_COMMANDS: dict[
    str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]
] = {
    "run": (cmd_run, _add_run),
    "status": (cmd_status, lambda p: None),
    "export": (cmd_export, lambda p: _add_winner(p, out=True)),
    "evaluate": (cmd_evaluate, lambda p: _add_winner(p, out=False)),
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
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rpztune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"rpztune {args.command}: interrupted; finished trials are kept in the storage", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
