"""The deployment files parse and agree with the code. There is no Docker engine here, so compose is
checked offline: every setting the code reads is provided, commands exist in our image, host names
and ports agree, the start order holds, and the topics and DDL come from the code, not a copy."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from importlib.metadata import distribution
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from rossmann_local import deploy, settings
from rossmann_local.domain.topics import PARTITIONS
from rossmann_local.reports.schema import DATABASE, TABLES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
OUR_IMAGE = "rossmann-local:latest"
# Ports the third-party images listen on by default (ours are read from their commands).
IMAGE_PORTS = {"postgres": 5432, "clickhouse": 8123}
ONE_SHOTS = {"kafka-topics": "topics", "clickhouse-schema": "clickhouse-schema", "shop-databases": "shop-databases"}
# Settings the code server may leave to their defaults: the stand-in's own settings, and the world
# file (the compose world is the reference world sized by ROSSMANN_SHOP_COUNT).
NOT_FOR_THE_CODE_SERVER = {settings.SYNC_API_PASSWORD, settings.SYNC_API_STORE_URL, settings.WORLD_FILE,
                           # Given, but empty unless .env names a scenario (checked below).
                           settings.SCENARIO,
                           # The local instance's storage; compose's instance is its dagster.yaml (DAGSTER_PG_*).
                           settings.DAGSTER_PG_URL}

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (``${X}``, ``${X:-default}``, ``${X:?error}``, ``$$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind and kind.endswith("?"):
            raise AssertionError(f"compose requires {name}: {rest}")
        return rest or ""

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_TEXT), env_example())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def ours(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == OUR_IMAGE}


def command(service: dict[str, Any]) -> list[str]:
    raw = service.get("command", [])
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def option(argv: list[str], *names: str) -> str:
    for i, part in enumerate(argv[:-1]):
        if part in names:
            return argv[i + 1]
    raise AssertionError(f"{argv} has none of {names}")


def dockerfile() -> tuple[dict[str, str], dict[str, str]]:
    """The image's environment, and where each COPY puts each source (image path -> repo path)."""
    env: dict[str, str] = {}
    copies: dict[str, str] = {}
    workdir = PurePosixPath("/")
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "ENV":
            env.update(w.split("=", 1) for w in words[1:])
        elif words[0] == "WORKDIR":
            workdir = PurePosixPath(words[1])
        elif words[0] == "COPY":
            *sources, target = words[1:]
            target = target.replace("$DAGSTER_HOME", env.get("DAGSTER_HOME", ""))
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"
                where = workdir / target
                copies[str(where / Path(source).name if target.endswith("/") else where)] = source
    return env, copies


def test_every_variable_compose_needs_is_in_env_example_and_nothing_real_is_committed() -> None:
    example = env_example()
    required = {m.group(1) for m in _VARIABLE.finditer(COMPOSE_TEXT) if m.group(2) in (None, ":?", "?")}
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    passwords = {k: v for k, v in example.items() if "PASSWORD" in k}
    assert passwords and all(v.startswith("change-me") for v in passwords.values()), "placeholders only"
    assert not re.search(r"PASSWORD:\s*[\"']?(?!\$\{)\w", COMPOSE_TEXT), "a password written into compose"


def test_our_services_run_commands_that_our_image_installs(services: dict[str, Any]) -> None:
    built = ours(services)
    assert set(built) == {*ONE_SHOTS, "sync-api", "dagster-code", "dagster-webserver", "dagster-daemon"}
    _env, copies = dockerfile()
    scripts = {ep.name for dist in ("dagster", "dagster-webserver") for ep in distribution(dist).entry_points
               if ep.group == "console_scripts"}
    for name, service in built.items():
        assert service["build"]["dockerfile"] == "Dockerfile" and (ROOT / service["build"]["context"]).is_dir()
        argv = command(service)
        if argv[0] == "python":
            module = option(argv, "-m")
            assert importlib.util.find_spec(module) is not None, f"{name} runs python -m {module}, not in the package"
        else:
            assert argv[0] in scripts, f"{name} runs {argv[0]}, which the image does not install"
        if "-w" in argv:
            assert option(argv, "-w") in copies, f"{name}'s workspace {option(argv, '-w')} is not in the image"
        if "-m" in argv and argv[0] == "dagster":
            assert importlib.util.find_spec(option(argv, "-m")) is not None


def test_the_image_carries_the_instance_and_the_compose_workspace() -> None:
    env, copies = dockerfile()
    assert copies[f"{env['DAGSTER_HOME']}/dagster.yaml"] == "dagster.yaml"
    assert "deploy/workspace.yaml" in copies.values()
    assert env["TZ"] == "UTC", "chDB and the reports read times in the process's zone"


def dagster_yaml_env_names() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((ROOT / "dagster.yaml").read_text()))
    return found


def test_every_setting_the_code_reads_is_provided(services: dict[str, Any]) -> None:
    code = services["dagster-code"]["environment"]
    needed = set(settings.ALL_SETTINGS) - NOT_FOR_THE_CODE_SERVER
    assert needed <= {k for k, v in code.items() if str(v)}, f"the code server lacks {needed - set(code)}"
    assert settings.SCENARIO in code, "a deployment's chain jobs take the scenario .env names"
    assert code[settings.SYNC_API_ADMIN_TOKEN] == services["sync-api"]["environment"][settings.SYNC_API_ADMIN_TOKEN], \
        "the chain's jobs enter changes with the stand-in's admin token"
    instance_env = dagster_yaml_env_names()
    assert instance_env >= {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"}
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon"):
        env = services[name]["environment"]
        assert instance_env <= set(env), f"{name} lacks {instance_env - set(env)} for dagster.yaml"
    stand_in = services["sync-api"]["environment"]
    assert {settings.SYNC_API_PASSWORD, settings.SYNC_API_STORE_URL, settings.KAFKA_BOOTSTRAP_SERVERS,
            settings.SHOP_COUNT} <= set(stand_in)
    assert stand_in[settings.SHOP_COUNT] == code[settings.SHOP_COUNT], "one world for the stand-in and the shops"
    for name in ONE_SHOTS:
        env = services[name]["environment"]
        assert {settings.KAFKA_BOOTSTRAP_SERVERS, settings.CLICKHOUSE_DSN, settings.SHOP_DB_URL,
                settings.SHOP_COUNT} <= set(env)
    for name in ("dagster-webserver", "dagster-daemon"):
        assert not set(services[name]["environment"]) & set(settings.ALL_SETTINGS), \
            f"{name} does not run our code; it gets no shop, ClickHouse or Kafka credentials"


def test_the_code_reads_the_environment_only_through_settings() -> None:
    """So ALL_SETTINGS (and with it the test above) is complete."""
    names = {value for key, value in vars(settings).items() if key.isupper() and isinstance(value, str)}
    assert set(settings.ALL_SETTINGS) <= names
    readers = ("os.environ.get", "os.getenv", "require", "env_int", "env_float", "dg.EnvVar")
    for path in (ROOT / "rossmann_local").rglob("*.py"):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            key = None
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = node.slice
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in readers:
                key = node.args[0]
            if key is None:
                continue
            if isinstance(key, ast.Constant):
                assert key.value == "DAGSTER_HOME", f"{path.name} reads {key.value!r} directly"
            else:
                assert isinstance(key, ast.Name) and getattr(settings, key.id, None) in settings.ALL_SETTINGS, \
                    f"{path.name}:{node.lineno} reads the environment outside settings.ALL_SETTINGS"


def listening_ports(services: dict[str, Any]) -> dict[str, int]:
    ports = {name: IMAGE_PORTS[name] for name in IMAGE_PORTS}
    listeners = dict(item.split("://") for item in services["kafka"]["environment"]["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in
                      services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["INTERNAL"].split(":")[0] == "kafka", "containers must be told to use the service name"
    assert advertised["EXTERNAL"] == "localhost:29092" and "127.0.0.1:29092:29092" in services["kafka"]["ports"]
    ports["kafka"] = int(listeners["INTERNAL"].rsplit(":", 1)[1])
    ports["sync-api"] = int(option(command(services["sync-api"]), "--port"))
    ports["dagster-code"] = int(option(command(services["dagster-code"]), "-p"))
    ports["dagster-webserver"] = int(option(command(services["dagster-webserver"]), "-p"))
    return ports


def depends(services: dict[str, Any], name: str) -> set[str]:
    """Everything a service waits for, directly or through others."""
    direct = set(services[name].get("depends_on", {}))
    return direct.union(*(depends(services, d) for d in direct)) if direct else set()


def test_host_names_and_ports_agree(services: dict[str, Any]) -> None:
    ports = listening_ports(services)
    env = services["dagster-code"]["environment"]
    shop_db = make_url(env[settings.SHOP_DB_URL].format(shop_id=1))
    sync_api = urlsplit(env[settings.SYNC_API_URL])
    clickhouse = urlsplit(env[settings.CLICKHOUSE_DSN])
    kafka_host, kafka_port = env[settings.KAFKA_BOOTSTRAP_SERVERS].rsplit(":", 1)
    targets = [(shop_db.host, shop_db.port), (sync_api.hostname, sync_api.port),
               (clickhouse.hostname, clickhouse.port), (kafka_host, int(kafka_port)),
               (env["DAGSTER_PG_HOST"], int(env["DAGSTER_PG_PORT"]))]
    for host, port in targets:
        assert host in services, f"{host} is not a compose service"
        assert ports[host] == port, f"{host} listens on {ports[host]}, the code is told {port}"
        assert host in depends(services, "dagster-code"), f"dagster-code does not wait for {host}"
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    assert (workspace["host"], workspace["port"]) == ("dagster-code", ports["dagster-code"])
    code_health = services["dagster-code"]["healthcheck"]["test"]
    assert option(code_health, "-p") == str(ports["dagster-code"])
    assert f":{ports['sync-api']}/health" in " ".join(services["sync-api"]["healthcheck"]["test"])
    assert f"127.0.0.1:{ports['dagster-webserver']}:{ports['dagster-webserver']}" in services[
        "dagster-webserver"]["ports"]


def test_passwords_agree_between_the_servers_and_their_clients(services: dict[str, Any]) -> None:
    env = services["dagster-code"]["environment"]
    postgres_password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert make_url(env[settings.SHOP_DB_URL]).password == postgres_password == env["DAGSTER_PG_PASSWORD"]
    assert urlsplit(env[settings.CLICKHOUSE_DSN]).password == services["clickhouse"]["environment"][
        "CLICKHOUSE_PASSWORD"]
    assert make_url(env[settings.SHOP_DB_URL]).database == "shop_{shop_id}"


def test_the_start_order_holds(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            condition = condition["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no check"
            else:
                assert condition == "service_completed_successfully" and target in ONE_SHOTS, (name, target)
    for one_shot, what in ONE_SHOTS.items():
        assert command(services[one_shot])[-2:] == ["rossmann_local.deploy", what] or \
            command(services[one_shot])[-1] == what
        assert services[one_shot]["restart"] == "on-failure" and "ports" not in services[one_shot]
        assert services["dagster-code"]["depends_on"][one_shot]["condition"] == "service_completed_successfully"
    assert services["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["clickhouse-schema"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert services["shop-databases"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "kafka-topics" in services["sync-api"]["depends_on"], "the stand-in publishes to the topics"
    for name in ("dagster-webserver", "dagster-daemon"):
        assert services[name]["depends_on"]["dagster-code"]["condition"] == "service_healthy"
    volumes = {name: set(s.get("volumes", [])) for name, s in services.items()}
    storage = "dagster-storage:/opt/dagster/home/storage"
    assert all(storage in volumes[n] for n in ("dagster-code", "dagster-webserver", "dagster-daemon")), \
        "runs write compute logs in the code server; the webserver shows them"


def test_topics_and_ddl_come_from_the_code_not_a_copy(services: dict[str, Any]) -> None:
    assert set(ONE_SHOTS.values()) == set(deploy.COMMANDS)
    deploy_files = [COMPOSE_TEXT, *(p.read_text() for p in (ROOT / "deploy").iterdir())]
    for text in deploy_files:
        assert "CREATE TABLE" not in text.upper()
        assert not [topic for topic in PARTITIONS if topic in text], "a topic name copied into the deployment"
        assert not [table for table in TABLES if f"{DATABASE}.{table}" in text]
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", \
        "only the code's topics, with the reference partition counts"


def test_the_local_workspace_and_the_instance_point_at_the_code() -> None:
    local = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert local == {"module_name": "rossmann_local.definitions", "location_name": "rossmann_local"}
    instance = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert set(instance["storage"]) == {"postgres"}
    assert instance["telemetry"]["enabled"] is False
    runs = instance["concurrency"]["runs"]
    assert 1 <= runs["max_concurrent_runs"] <= 8
    limits = {limit["key"]: limit for limit in runs["tag_concurrency_limits"]}
    assert limits["dagster/partition/shop"]["limit"] == 1
    # A backfill's runs go side by side: the shift assets' dependency on their previous shift orders them.
    assert "dagster/backfill" not in limits
    assert limits["rossmann_local/run"]["value"] == "catalogue_upsert"


def test_every_published_port_listens_on_loopback_unless_the_user_opts_in(services: dict[str, Any]) -> None:
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"postgres", "kafka", "clickhouse", "sync-api", "dagster-webserver"}
    for name, ports in published.items():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), name
    raw = re.findall(r'^\s+- "([^"]+:\d+:\d+)"$', COMPOSE_TEXT, re.MULTILINE)
    assert len(raw) == 5 and all(p.startswith("${ROSSMANN_PUBLISH_ADDRESS:-127.0.0.1}:") for p in raw), raw
    assert env_example()["ROSSMANN_PUBLISH_ADDRESS"] == "127.0.0.1"


def test_the_stand_ins_admin_endpoints_take_their_token_from_env(services: dict[str, Any]) -> None:
    environment = services["sync-api"]["environment"]
    assert environment["ROSSMANN_SYNC_API_ADMIN_TOKEN"] == env_example()["ROSSMANN_SYNC_API_ADMIN_TOKEN"]
    assert "ROSSMANN_SYNC_API_ADMIN_TOKEN: ${ROSSMANN_SYNC_API_ADMIN_TOKEN:?" in COMPOSE_TEXT
