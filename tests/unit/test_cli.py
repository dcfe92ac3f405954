"""The `mlops` command as a person runs it: `-h` of every subcommand, `mlops replay`'s options,
`mlops config check`, `mlops suite bootstrap`."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlops import cli
from mlops.config import load_use_case
from mlops.data import suites

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))
# The installed console script, next to this interpreter: what a person types.
MLOPS = Path(sys.executable).with_name("mlops")


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every subcommand of the argparse tree as its path of names, e.g. ("stack", "down")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield (*path, name)
                yield from _subcommands(subparser, (*path, name))


def _parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    for name in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return parser


SUBCOMMANDS = list(_subcommands(cli.build_parser()))


def test_the_walk_finds_every_level_of_subcommands() -> None:
    expected = {("stack", "down"), ("demo",), ("data", "restore"), ("suite", "bootstrap"), ("config", "check"),
                ("replay",)}  # fmt: skip
    assert expected <= set(SUBCOMMANDS), SUBCOMMANDS


@pytest.mark.parametrize("path", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_prints_its_own_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*path, "-h"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mlops {' '.join(path)} [-h]"), out
    # Its own options, not its parent's: every option of this subcommand is listed.
    options = [o for a in _parser_of(path)._actions for o in a.option_strings]
    assert options and all(option in out for option in options), (options, out)


@pytest.mark.parametrize("path", [("replay",), ("suite",), ("suite", "bootstrap")], ids=" ".join)
def test_the_installed_command_prints_help(path: tuple[str, ...]) -> None:
    done = subprocess.run([str(MLOPS), *path, "-h"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: mlops {' '.join(path)} [-h]")


def test_the_installed_replay_takes_its_options_and_names_a_bad_use_case() -> None:
    done = subprocess.run(
        [str(MLOPS), "replay", "--use-case", "no_such_use_case", "--via", "batch", "--speed", "0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "unrecognized arguments" not in done.stderr
    assert "error: no use case 'no_such_use_case'" in done.stderr and "known: [" in done.stderr


def test_replay_options_parse_as_documented(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["replay", "--use-case", "flight_delays", "--start", "2023-03-01", "--via", "batch", "--speed", "0"]
    args = cli.build_parser("replay").parse_args(argv)
    assert (args.use_case, args.start, args.end, args.via, args.speed) == (
        "flight_delays",
        "2023-03-01",
        None,
        "batch",
        0,
    )
    assert args.label_delay_days == 1.0 and args.rows_per_request == 24 and not args.deliver_remaining_labels
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay", "--via", "batch"])
    assert exited.value.code == 2
    assert "the following arguments are required: --use-case" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["replay", "--use-case", "flight_delays", "--via", "carrier_pigeon"])
    assert "invalid choice: 'carrier_pigeon'" in capsys.readouterr().err


def test_commands_that_need_no_module_options_import_none() -> None:
    """`mlops stack down` stays instant: the suite and replay modules load only for their own commands."""
    probe = (
        "import sys; from mlops import cli; cli.build_parser('stack'); "
        "print(sorted(m for m in sys.modules if m.startswith(('mlops.data', 'mlops.platform.replay', 'pandas'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_bundled_configs_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert all(f"{path}: ok" in out for path in CONFIGS), out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_a_misspelt_hyperparameter_is_named_with_its_key(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(config.read_text())
    last = len(raw["candidates"]) - 1
    right = sorted(raw["candidates"][last]["params"])[0]
    wrong = right[:-1] + right[-1] * 2  # n_estimators -> n_estimatorss
    raw["candidates"][last]["params"][wrong] = raw["candidates"][last]["params"].pop(right)
    broken = tmp_path / config.name
    broken.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(tmp_path))

    # Parsing does not import scikit-learn, so it cannot see this; the check can.
    assert load_use_case(broken).candidates[last].params[wrong]
    assert cli.main(["config", "check", config.stem]) == 1
    first, line, *rest = capsys.readouterr().err.splitlines()
    assert first == f"invalid use-case config {broken}:" and rest == []
    assert line.startswith(f"  candidates[{last}].params.{wrong}: ")
    assert f"has no parameter {wrong!r}; did you mean {right!r}?" in line


def test_the_self_check_fails_on_a_misspelt_hyperparameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.platform import health

    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(tmp_path))
    for config in CONFIGS:
        shutil.copy(config, tmp_path / config.name)
    assert health.check_configs().ok
    raw = yaml.safe_load(CONFIGS[0].read_text())
    raw["candidates"][0]["params"]["no_such_param"] = [1]
    (tmp_path / CONFIGS[0].name).write_text(yaml.safe_dump(raw))
    named = rf"{CONFIGS[0].stem}: candidates\[0\]\.params\.no_such_param: .*mlops config check"
    with pytest.raises(ValueError, match=named):
        health.check_configs()


def test_an_unknown_use_case_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", "no_such_use_case"]) == 1
    assert "no use case 'no_such_use_case'" in capsys.readouterr().err


def _ranges(ge_dir: Path, suite: str) -> dict[str, tuple[float, float]]:
    """column -> (min, max) of the suite's value-range expectations."""
    expectations = json.loads((ge_dir / "expectations" / f"{suite}.json").read_text())["expectations"]
    return {
        e["kwargs"]["column"]: (e["kwargs"]["min_value"], e["kwargs"]["max_value"])
        for e in expectations
        if e["type"] == "expect_column_values_to_be_between"
    }


def test_suite_bootstrap_takes_the_tolerance_like_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy of the committed context: bootstrapping rewrites the suite file.
    ge_dir = tmp_path / "great_expectations"
    shutil.copytree(PROJECT_ROOT / "great_expectations", ge_dir, ignore=shutil.ignore_patterns("uncommitted"))
    monkeypatch.setenv("MLOPS_GE_DIR", str(ge_dir))

    assert cli.main(["suite", "bootstrap", "breast_cancer", "--tolerance", "0"]) == 0
    tight = _ranges(ge_dir, "breast_cancer")
    assert cli.main(["suite", "bootstrap", "breast_cancer", "--tolerance", "0.5"]) == 0
    wide = _ranges(ge_dir, "breast_cancer")
    assert "suite 'breast_cancer': 569 reference rows" in capsys.readouterr().out
    assert tight.keys() == wide.keys() and "mean_radius" in tight
    # Half the observed span added on each side (never below 0 for a column never negative).
    low, high = tight["mean_radius"]
    assert wide["mean_radius"] == pytest.approx((max(0.0, low - (high - low) / 2), high + (high - low) / 2), rel=1e-4)
    # One parser behind both commands: the same options, under each one's name.
    commands = [("mlops suite", cli.main, ["suite"]), ("python -m mlops.data.suites", suites.main, [])]
    for prog, main, prefix in commands:
        with pytest.raises(SystemExit):
            main([*prefix, "bootstrap", "--help"])
        usage = capsys.readouterr().out
        assert usage.startswith(f"usage: {prog} bootstrap") and "--reference" in usage and "--tolerance" in usage


def test_the_suite_module_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlops.data.suites", "bootstrap", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m mlops.data.suites bootstrap")
