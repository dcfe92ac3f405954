"""`mlops` command: the local stack, the demo, replay, lineage and reproduction, data, suite and config tools.

Subcommands import their modules lazily so `mlops stack down` stays instant. `mlops suite`
and `mlops replay` take their options from their own modules (one parser each for
`mlops X` and `python -m ...`, so the two cannot drift apart); those modules are imported
only when the command line names the subcommand, or when the whole tree is built.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime


def _stack_up(args: argparse.Namespace) -> int:
    from mlops.platform import stack

    for name, url in stack.up().items():
        print(f"{name:>20}: {url}")
    return 0


def _stack_down(args: argparse.Namespace) -> int:
    from mlops.platform import stack

    stopped = stack.down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _stack_status(args: argparse.Namespace) -> int:
    from mlops.platform import stack

    print(json.dumps(stack.status(), indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.rollout:
        from mlops.platform import rollout_demo

        return rollout_demo.run(keep_running=not args.stop_after)
    from mlops.platform import demo

    return demo.run(keep_running=not args.stop_after, fast=args.fast)


def _data_restore(args: argparse.Namespace) -> int:
    from mlops.data import versioning

    return versioning.main(["restore", args.md5, args.destination])


def _suite(args: argparse.Namespace) -> int:
    from mlops.data import suites
    from mlops.orchestration.connections import sql_uri_outside_task

    # Only this command resolves an SQL source's Airflow connection (the data layer imports no Airflow).
    return suites.run(args, sql_uri_resolver=sql_uri_outside_task)


def _config_check(args: argparse.Namespace) -> int:
    from mlops.config import ConfigError, check_hyperparameters, find_use_case, load_use_case
    from mlops.settings import get_settings

    directory = get_settings().configs_dir
    failed = 0
    for name in args.use_cases or sorted(p.stem for p in directory.glob("*.yaml")):
        try:
            use_case = find_use_case(name) if args.use_cases else load_use_case(directory / f"{name}.yaml")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        problems = check_hyperparameters(use_case)
        if problems:
            lines = [f"invalid use-case config {directory / f'{name}.yaml'}:", *(f"  {p}" for p in problems)]
            print("\n".join(lines), file=sys.stderr)
            failed += 1
        else:
            print(f"{directory / f'{name}.yaml'}: ok")
    return 1 if failed else 0


def _features(args: argparse.Namespace) -> int:
    from mlops.config import ConfigError, load_all
    from mlops.features import store
    from mlops.features.check import check_use_case
    from mlops.settings import get_settings

    repo = store.FeatureRepo.default()
    try:
        if args.action == "apply":
            print(f"registered in {repo.registry_location}: {', '.join(store.apply_definitions(repo))}")
        elif args.action == "ingest":
            for view, rows in store.ingest_offline(repo, get_settings().project_root).items():
                print(f"{view}: {rows} rows in {repo.offline_location(view)}")
        elif args.action == "materialize":
            end = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
            end = end if end.tzinfo else end.replace(tzinfo=UTC)
            print(f"online store loaded up to {end.isoformat()}: {', '.join(store.materialize(repo, end))}")
        else:
            problems = store.stale_definitions(repo)
            for use_case in load_all():
                try:
                    check_use_case(use_case, repo)
                except ConfigError as exc:
                    problems.append(str(exc))
            for problem in problems:
                print(problem, file=sys.stderr)
            if not problems:
                print(f"features/ matches the registry in {repo.registry_location}; every store-backed config checks")
            return 1 if problems else 0
    except store.FeatureStoreError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from mlops.config import ConfigError
    from mlops.lineage.chain import build_chain
    from mlops.lineage.gather import LineageError, gather, resolve
    from mlops.lineage.render import render_text
    from mlops.mlflow.client import quiet_console
    from mlops.predictionlog.stores import PredictionLogError

    quiet_console()
    try:
        chain = build_chain(gather(resolve(args.target, args.use_case)))
    except (LineageError, ConfigError, PredictionLogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(chain.to_dict(), indent=2, default=str) if args.json else render_text(chain))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from mlops.config import ConfigError
    from mlops.lineage.gather import LineageError
    from mlops.lineage.reproduce import ReproduceError, render_table, reproduce
    from mlops.mlflow.client import quiet_console

    quiet_console()
    if "@" not in args.target and "/" not in args.target:
        print(f"error: name a model version as model@alias or model/version, not {args.target!r}", file=sys.stderr)
        return 1
    try:
        result = reproduce(
            args.target, use_case=args.use_case, allow_code_drift=args.allow_code_drift, tolerance=args.tolerance
        )
    except (ReproduceError, LineageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_table(result))
    return 0 if result.agreed else 1


def _replay(args: argparse.Namespace) -> int:
    from mlops.platform import replay

    return replay.run(args)


def _suite_options(parser: argparse.ArgumentParser) -> None:
    from mlops.data import suites

    suites.add_arguments(parser)


def _replay_options(parser: argparse.ArgumentParser) -> None:
    from mlops.platform import replay

    replay.add_arguments(parser)


# Subcommands whose options live in their own module; importing mlops.data.suites alone takes 0.15 s.
MODULE_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "suite": _suite_options,
    "replay": _replay_options,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `mlops` parser. The subcommands of `MODULE_OPTIONS` get their options only when
    `command` names them, or when `command` is None (the whole tree: `mlops -h`, tests)."""

    def module_options(name: str, parser: argparse.ArgumentParser) -> None:
        if command is None or command == name:
            MODULE_OPTIONS[name](parser)

    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    stack_parser = sub.add_parser("stack", help="start, stop or inspect the local Airflow + MLflow stack")
    stack_sub = stack_parser.add_subparsers(dest="action", required=True)
    actions: dict[str, Callable[[argparse.Namespace], int]] = {
        "up": _stack_up,
        "down": _stack_down,
        "status": _stack_status,
    }
    for action, handler in actions.items():
        stack_sub.add_parser(action).set_defaults(handler=handler)

    demo = sub.add_parser("demo", help="run the end-to-end demo on the bundled bike data")
    demo.add_argument("--stop-after", action="store_true", help="stop the stack when the demo ends")
    demo.add_argument("--fast", action="store_true", help="replay fewer months (for tests)")
    demo.add_argument(
        "--rollout",
        action="store_true",
        help="instead: a shadow rollout promoted and a worse canary rolled back, on a stack of its own",
    )
    demo.set_defaults(handler=_demo)

    data = sub.add_parser("data", help="DVC-versioned snapshots")
    data_sub = data.add_subparsers(dest="action", required=True)
    restore = data_sub.add_parser("restore", help="restore a snapshot's exact bytes by its DVC md5")
    restore.add_argument("md5")
    restore.add_argument("destination")
    restore.set_defaults(handler=_data_restore)

    suite = sub.add_parser(
        "suite",
        help="Great Expectations suites: bootstrap <use_case> [--reference PATH] [--tolerance T]",
        description="Great Expectations suites learned from data.",
    )
    module_options("suite", suite)
    suite.set_defaults(handler=_suite)

    config = sub.add_parser("config", help="use-case configs")
    config_sub = config.add_subparsers(dest="action", required=True)
    check = config_sub.add_parser(
        "check", help="parse the configs and check every grid's parameter names against its estimator"
    )
    check.add_argument("use_cases", nargs="*", help="use case names; default: every file in the configs folder")
    check.set_defaults(handler=_config_check)

    features = sub.add_parser("features", help="the Feast feature store under MLOPS_HOME (docs/features.md)")
    features_sub = features.add_subparsers(dest="action", required=True)
    features_sub.add_parser("apply", help="register features/ in the registry (feast apply)")
    features_sub.add_parser("ingest", help="run the repository's feature pipelines into the offline store")
    materialize = features_sub.add_parser("materialize", help="load the online store, incrementally")
    materialize.add_argument("--end", help="ISO time to load up to (default: now, UTC)")
    features_sub.add_parser("check", help="features/ against the registry, and every store-backed config")
    features.set_defaults(handler=_features)

    lineage = sub.add_parser("lineage", help="where a prediction or model version came from, fact by fact")
    lineage.add_argument("target", help="a prediction's request id, model@alias or model/version")
    lineage.add_argument("--use-case", help="the use case to search (a request id) or check the model against")
    lineage.add_argument("--json", action="store_true", help="print the chain as JSON")
    lineage.set_defaults(handler=_lineage)

    reproduce = sub.add_parser(
        "reproduce", help="retrain a version from its recorded snapshot, code and candidate; compare every metric"
    )
    reproduce.add_argument("target", help="model@alias or model/version")
    reproduce.add_argument("--use-case", help="the use case registering the model (default: found by model name)")
    reproduce.add_argument(
        "--allow-code-drift",
        action="store_true",
        help="retrain even if the checkout's git commit or uv.lock differs from the recorded ones (said in the result)",
    )
    reproduce.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest allowed difference of a metric, relative to the recorded value (default 0: exactly equal)",
    )
    reproduce.set_defaults(handler=_reproduce)

    replay = sub.add_parser(
        "replay",
        help="replay a use case's later rows as production traffic",
        description="Replay a use case's later rows as production traffic, in time order, with labels later.",
    )
    module_options("replay", replay)
    replay.set_defaults(handler=_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    args = build_parser(command).parse_args(arguments)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
