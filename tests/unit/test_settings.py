"""Settings from flags and environment (``runtime.settings``): a flag beats
the environment, the environment beats the default, ``--help`` shows both
the variable and the default, and a bad value names its variable. Then the
commands' settings: their flags, variables and defaults are a contract
(README's option tables)."""

from __future__ import annotations

import argparse
from dataclasses import FrozenInstanceError, dataclass, fields
from pathlib import Path

import pytest

from actors.rules.job import JobSettings
from actors.rules.proxy import ProxySettings
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from ingress import IngressSettings
from runtime.cli import ClientSettings
from runtime.settings import SettingsError, add_options, from_args, option
from runtime.worker_settings import WorkerSettings
from script.consume import ConsumeSettings
from script.devserver import DevServerSettings
from script.ingress import IngressOptions
from sinks import redact_url


@dataclass(frozen=True, kw_only=True)
class Example:
    port: int = option(8080, flag="--port", env=("APP_PORT", "PORT"), help="port")
    ratio: float = option(0.5, flag="--ratio", env="APP_RATIO", help="a ratio")
    url: str = option(
        "redis://localhost/0",
        flag="--url",
        env="APP_URL",
        show=redact_url,
        help="where",
    )
    secret: str | None = option(None, env="APP_SECRET", parse=str, help="env only")
    verbose: bool = option(False, flag="--verbose", help="say more")
    limit: int | None = option(
        None, flag="--limit", parse=int, shown_default="no limit", help="at most"
    )


def parser_for(cls: type, environ: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example")
    add_options(parser, cls, environ=environ)
    return parser


def build(argv: list[str], environ: dict[str, str], cls: type = Example):
    parser = parser_for(cls, environ)
    return from_args(cls, parser.parse_args(argv), parser=parser, environ=environ)


def help_of(cls: type, environ: dict[str, str] | None = None) -> str:
    # Wide, so that a help line is never broken inside a name.
    parser = parser_for(cls, environ or {})
    parser.formatter_class = lambda prog: argparse.HelpFormatter(
        prog, width=1000, max_help_position=1000
    )
    return parser.format_help()


def test_a_flag_beats_the_environment_which_beats_the_default() -> None:
    assert build([], {}).port == 8080
    assert build([], {"APP_PORT": "9000"}).port == 9000
    assert build(["--port", "9100"], {"APP_PORT": "9000"}).port == 9100


def test_the_first_variable_set_wins_and_an_empty_one_counts_as_unset() -> None:
    assert build([], {"PORT": "7000"}).port == 7000
    assert build([], {"APP_PORT": "9000", "PORT": "7000"}).port == 9000
    assert build([], {"APP_PORT": "", "PORT": "7000"}).port == 7000
    assert build([], {"APP_RATIO": ""}).ratio == 0.5


def test_an_environment_only_setting_has_no_flag() -> None:
    assert build([], {"APP_SECRET": "s3cret"}).secret == "s3cret"
    with pytest.raises(SystemExit):
        build(["--secret", "x"], {})
    assert "s3cret" not in help_of(Example, {"APP_SECRET": "s3cret"})


def test_switches_and_optional_values() -> None:
    assert build([], {}).verbose is False
    assert build(["--verbose"], {}).verbose is True
    assert build([], {}).limit is None
    assert build(["--limit", "3"], {}).limit == 3


def test_settings_are_frozen() -> None:
    settings = build([], {})
    with pytest.raises(FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_help_shows_each_variable_and_default() -> None:
    text = help_of(Example)
    assert "port (env APP_PORT or PORT; default 8080)" in text
    assert "a ratio (env APP_RATIO; default 0.5)" in text
    assert "at most (default no limit)" in text


def test_help_shows_a_set_variable_through_show_so_a_password_stays_hidden() -> None:
    text = help_of(Example, {"APP_URL": "redis://:hunter2@cache:6379/0"})
    assert "env APP_URL, set to redis://:***@cache:6379/0" in text
    assert "hunter2" not in text


def test_a_bad_environment_value_is_an_error_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="APP_PORT: expected an integer, got 'x'"):
        from_args(Example, argparse.Namespace(), environ={"APP_PORT": "x"})
    with pytest.raises(SettingsError, match="APP_RATIO: expected a number"):
        from_args(Example, argparse.Namespace(), environ={"APP_RATIO": "half"})


def test_with_a_parser_a_bad_variable_exits_with_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        build([], {"APP_PORT": "eighty"})
    assert exited.value.code == 2
    assert "environment variable APP_PORT: expected an integer" in (
        capsys.readouterr().err
    )


def test_a_bad_flag_value_says_what_was_expected(capsys) -> None:
    with pytest.raises(SystemExit):
        build(["--port", "x"], {})
    assert "argument --port: expected an integer, got 'x'" in capsys.readouterr().err


def test_an_error_about_a_secret_shows_it_only_redacted() -> None:
    @dataclass(frozen=True)
    class Secretive:
        url: int = option(0, flag="--url", env="APP_URL", show=redact_url, help="x")

    with pytest.raises(SettingsError) as error:
        from_args(
            Secretive, argparse.Namespace(), environ={"APP_URL": "redis://:pw@h/0"}
        )
    assert "pw" not in str(error.value).replace("redis://:***@h/0", "")
    assert "APP_URL" in str(error.value)


# --- The commands' settings ---------------------------------------------------------

# flag -> (environment variables, default): README's worker and ingress tables.
WORKER = {
    "--shards": (("EVENTFLOW_SHARDS",), 4),
    "--shard": ((), "all"),
    "--sink": (("EVENTFLOW_SINK",), ("file:./data/out",)),
    "--pipeline": (("EVENTFLOW_PIPELINE",), "actors.pipelines:collected"),
    "--model": (("EVENTFLOW_MODELS",), ()),
    "--no-job-parts": (("EVENTFLOW_NO_JOB_PARTS",), False),
    "--job-deadline": (("EVENTFLOW_JOB_DEADLINE_S",), 3600),
    "--job-linger": (("EVENTFLOW_JOB_LINGER_S",), 3600),
    "--summary-interval": (("EVENTFLOW_SUMMARY_INTERVAL_S",), 60),
    "--continue-as-new-after": ((), None),
    "--connect-timeout": ((), 60),
    "--proxy-hold": (("EVENTFLOW_PROXY_HOLD_S",), 30),
    "--no-eager-start": (("EVENTFLOW_NO_EAGER_START",), False),
    "--keep-jobs-open": (("EVENTFLOW_KEEP_JOBS_OPEN",), False),
    "--workflow-task-slots": (("EVENTFLOW_WORKFLOW_TASK_SLOTS",), 32),
    "--eager-task-slots": (("EVENTFLOW_EAGER_TASK_SLOTS",), 480),
    "--malloc-arenas": (("EVENTFLOW_MALLOC_ARENAS",), 2),
    "--cached-workflows": (("EVENTFLOW_CACHED_WORKFLOWS",), 1500),
    "--retire": ((), False),
    "--metrics-port": (("EVENTFLOW_METRICS_PORT",), None),
    "--metrics-host": (("EVENTFLOW_METRICS_HOST",), "127.0.0.1"),
    "--log-level": (("EVENTFLOW_LOG_LEVEL",), "info"),
}
INGRESS = {
    "--host": (("EVENTFLOW_INGRESS_HOST",), "127.0.0.1"),
    "--port": (("EVENTFLOW_INGRESS_PORT", "PORT"), 8080),
    "--shards": (("EVENTFLOW_SHARDS",), 4),
    "--batch-window-ms": (("EVENTFLOW_INGRESS_BATCH_WINDOW_MS",), 5),
    "--batch-max-events": (("EVENTFLOW_INGRESS_BATCH_MAX_EVENTS",), 500),
    "--batch-max-bytes": (("EVENTFLOW_INGRESS_BATCH_MAX_BYTES",), 200 << 10),
    "--in-flight": (("EVENTFLOW_INGRESS_IN_FLIGHT",), 1),
    "--max-queued": (("EVENTFLOW_INGRESS_MAX_QUEUED",), 20_000),
    "--ack-timeout": (("EVENTFLOW_INGRESS_ACK_TIMEOUT_S",), 8),
    "--retry-after": (("EVENTFLOW_INGRESS_RETRY_AFTER_S",), 2),
    "--max-body-bytes": (("EVENTFLOW_INGRESS_MAX_BODY_BYTES",), 16 << 20),
    "--max-payload-bytes": (("EVENTFLOW_MAX_PAYLOAD_BYTES",), 262_144),
    "--token-file": ((), None),
    "--ready-max-pending": (("EVENTFLOW_INGRESS_READY_MAX_PENDING",), 50_000),
    "--metrics-port": (("EVENTFLOW_METRICS_PORT",), None),
    "--metrics-host": (("EVENTFLOW_METRICS_HOST",), "127.0.0.1"),
    "--log-level": (("EVENTFLOW_LOG_LEVEL",), "info"),
}


def contract(cls: type) -> dict[str, tuple[tuple[str, ...], object]]:
    found = {}
    for f in fields(cls):
        opt = f.metadata.get("eventflow.option")
        if opt is not None and opt.flag is not None:
            found[opt.flag] = (opt.env, f.default)
    return found


@pytest.mark.parametrize(
    ("cls", "expected"), [(WorkerSettings, WORKER), (IngressOptions, INGRESS)]
)
def test_the_commands_keep_their_flags_variables_and_defaults(
    cls: type, expected: dict
) -> None:
    assert contract(cls) == expected


def test_the_ingress_token_comes_only_from_the_environment_or_a_file(
    tmp_path: Path,
) -> None:
    token_env = {"EVENTFLOW_INGRESS_TOKEN": "from-env"}
    assert build([], token_env, IngressOptions).service_settings().token == "from-env"
    file = tmp_path / "token"
    file.write_text("from-file\n")
    from_file = build(["--token-file", str(file)], token_env, IngressOptions)
    assert from_file.service_settings().token == "from-file"
    assert "--token " not in help_of(IngressOptions)
    assert "from-env" not in repr(build([], token_env, IngressOptions))


def test_every_option_of_every_command_shows_its_variable_and_default() -> None:
    for cls in (WorkerSettings, IngressOptions, ClientSettings, ConsumeSettings):
        text = help_of(cls)
        for f in fields(cls):
            opt = f.metadata["eventflow.option"]
            if opt.flag is None:
                continue
            line = next(
                line
                for line in text.splitlines()
                if line.strip().startswith(opt.flag + " ")
            )
            for name in opt.env:
                assert name in line, (cls.__name__, opt.flag)
            if not isinstance(f.default, bool):
                assert "default " in line, (cls.__name__, opt.flag)
    assert "env TEMPORAL_NAMESPACE; default default" in help_of(DevServerSettings)


def test_the_worker_help_shows_its_sink_redacted() -> None:
    text = help_of(WorkerSettings, {"EVENTFLOW_SINK": "redis://:pw%40x@h:6379/0"})
    assert "set to redis://:***@h:6379/0" in text
    assert "pw" not in text.replace("password", "")


def test_the_worker_config_takes_the_rules_defaults() -> None:
    """One source for each default: the rules' settings types."""
    config = build([], {}, WorkerSettings).worker_config()
    assert config == WorkerConfig()
    assert config.job == JobSettings(reopen=True)
    assert config.tenant == TenantSettings()
    proxy = config.proxy_settings(0)
    assert proxy == ProxySettings(shard=0, shards=config.shards)
    assert IngressSettings().ready_max_pending == proxy.max_pending


def test_the_worker_config_takes_flags_and_environment(capsys) -> None:
    settings = build(
        ["--job-deadline", "10", "--continue-as-new-after", "500"],
        {"EVENTFLOW_SHARDS": "2", "EVENTFLOW_PROXY_HOLD_S": "0.1"},
        WorkerSettings,
    )
    config = settings.worker_config()
    assert (config.shards, config.hold_s, config.job.default_deadline_s) == (
        2,
        0.1,
        10.0,
    )
    assert config.job.continue_as_new_after == 500
    assert config.tenant.continue_as_new_after == 500
    assert config.proxy_continue_as_new_after == 500
    slots = build([], {"EVENTFLOW_WORKFLOW_TASK_SLOTS": "256"}, WorkerSettings)
    assert slots.worker_config().workflow_task_slots == 256
    with pytest.raises(SystemExit):
        build([], {"EVENTFLOW_WORKFLOW_TASK_SLOTS": "0"}, WorkerSettings)
    assert "EVENTFLOW_WORKFLOW_TASK_SLOTS: expected a positive integer, got 0" in (
        capsys.readouterr().err
    )
    shared = build(["--eager-task-slots", "0"], {}, WorkerSettings)
    assert shared.worker_config().eager_task_slots == 0
    with pytest.raises(SystemExit):
        build([], {"EVENTFLOW_EAGER_TASK_SLOTS": "-1"}, WorkerSettings)
    assert "EVENTFLOW_EAGER_TASK_SLOTS: expected an integer >= 0, got -1" in (
        capsys.readouterr().err
    )


def test_the_proxy_holds_a_job_no_longer_than_the_default_deadline() -> None:
    config = build(
        ["--job-deadline", "10", "--proxy-hold", "45"], {}, WorkerSettings
    ).worker_config()
    assert config.hold_s == 45.0
    assert config.proxy_settings(0).hold_s == 10.0


@dataclass(frozen=True, kw_only=True)
class Many:
    names: tuple[str, ...] = option(
        (), flag="--name", env="APP_NAMES", many=True, help="names"
    )


def test_a_many_option_repeats_its_flag_or_splits_its_variable_on_commas() -> None:
    environ = {"APP_NAMES": "a:x, b:y,,"}
    assert build([], {}, Many).names == ()
    assert build([], environ, Many).names == ("a:x", "b:y")
    assert build(["--name", "c:z", "--name", "d:w"], environ, Many).names == (
        "c:z",
        "d:w",
    )


def test_the_worker_takes_models_and_job_parts_is_on_by_default() -> None:
    default = build([], {}, WorkerSettings).worker_config()
    assert (default.models, default.job_parts) == ((), True)
    config = build(
        ["--model", "actors.models:detections", "--no-job-parts"], {}, WorkerSettings
    ).worker_config()
    assert (config.models, config.job_parts) == (("actors.models:detections",), False)
    from_env = build(
        [], {"EVENTFLOW_MODELS": "a.b:c,d.e:f"}, WorkerSettings
    ).worker_config()
    assert from_env.models == ("a.b:c", "d.e:f")


def test_the_consumer_takes_the_workers_sink_only_when_it_is_a_redis_url() -> None:
    redis_sink = {"EVENTFLOW_SINK": "redis://h:6379/0"}
    assert build([], redis_sink, ConsumeSettings).url == "redis://h:6379/0"
    assert build([], {"EVENTFLOW_SINK": "file:./out"}, ConsumeSettings).url is None
    explicit = build(["--from", "redis://other/1"], redis_sink, ConsumeSettings)
    assert explicit.url == "redis://other/1"


def test_the_consumer_takes_the_first_redis_url_of_the_workers_sink_list() -> None:
    sinks = "file:./out, rediss://:pw@a:6380/0,redis://b:6379/1"
    assert (
        build([], {"EVENTFLOW_SINK": sinks}, ConsumeSettings).url
        == "rediss://:pw@a:6380/0"
    )
    assert (
        build([], {"EVENTFLOW_SINK": "file:./out,sqlite:x.db"}, ConsumeSettings).url
        is None
    )
