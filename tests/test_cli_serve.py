"""``lagscaler serve`` as a user runs it: settings from file, environment and flags; errors; signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint, free_port
from structlog.typing import EventDict
from support import eventually

from lagscaler.cli import _Parser, main
from lagscaler.cli.serve import ServeOptions, build_parser, handover_from_options, serve_options
from lagscaler.errors import UserError


def parse(argv: list[str], environ: dict[str, str] | None = None) -> ServeOptions:
    parser = build_parser(_Parser(prog="serve", add_help=False))
    options, _ = serve_options(parser.parse_args(argv), environ or {})
    return options


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "lagscaler.yaml"
    path.write_text(
        "bootstrap-server: file-kafka:9092\n"
        "policy-dir: /etc/lagscaler/policies\n"
        "sample-interval: 5\n"
        "authorization-always-allow: true\n"
        "requestheader-allowed-names: [front-proxy-client, aggregator]\n"
    )
    return path


# The precedence, pinned: (flag, environment, file) -> the value serve uses. None: not given there.
PRECEDENCE = [
    ("9", "7", "5", 9.0),
    ("9", None, "5", 9.0),
    ("9", "7", None, 9.0),
    (None, "7", "5", 7.0),
    (None, None, "5", 5.0),
    (None, "7", None, 7.0),
    (None, None, None, 10.0),  # the default
]


@pytest.mark.parametrize(("flag", "env", "file", "expected"), PRECEDENCE)
def test_precedence_is_flag_then_environment_then_file_then_default(
    tmp_path: Path, flag: str | None, env: str | None, file: str | None, expected: float
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("bootstrap-server: k:1\npolicy-dir: p\n" + (f"sample-interval: {file}\n" if file else ""))
    argv = ["--config", str(path)] + (["--sample-interval", flag] if flag else [])
    environ = {"LAGSCALER_SAMPLE_INTERVAL": env} if env else {}
    assert parse(argv, environ).sample_interval == expected


@pytest.mark.parametrize("topic", [".", ".."])
def test_a_control_topic_kafka_cannot_create_is_refused_before_serve_waits_for_it(
    tmp_path: Path, topic: str
) -> None:
    """'.' and '..' match the option's pattern but Kafka refuses them (``Topic.validate``): the runner
    would wait for a topic that can never exist."""
    flags = ["--bootstrap-server", "k:1", "--policy-dir", "p", "--handover-state-dir", str(tmp_path)]
    options = parse([*flags, "--handover-control-topic", topic])
    with pytest.raises(
        UserError, match=f"--handover-control-topic: '{re.escape(topic)}' is not a topic name"
    ):
        handover_from_options(options)


@pytest.mark.parametrize(
    ("argv", "environ", "file", "message"),
    [
        (
            [],
            {"LAGSCALER_SAMPLE_INTERVAL": "0"},
            "",
            "$LAGSCALER_SAMPLE_INTERVAL: sample-interval: must be > 0",
        ),
        ([], {}, "sample-interval: -1\n", "c.yaml: sample-interval: must be > 0, got -1"),
        ([], {"LAGSCALER_LOG_LEVEL": "loud"}, "", "$LAGSCALER_LOG_LEVEL: log-level: must be one of"),
        ([], {"LAGSCALER_TIMEOUT": "soon"}, "", "$LAGSCALER_TIMEOUT: timeout: expected a number, got 'soon'"),
        (["--sample-interval", "0"], {}, "", "argument --sample-interval: must be > 0, got '0'"),
        # inf passes "> 0": serve would sample once and then wait for ever, or fail every cycle
        (["--sample-interval", "inf"], {}, "", "argument --sample-interval: must be a finite number"),
        (["--sample-interval", "1e400"], {}, "", "argument --sample-interval: must be a finite number"),
        # once, then asleep for ever: refused like any duration past a year
        (["--sample-interval", "1e300"], {}, "", "argument --sample-interval: must be <= 31622400"),
        (
            [],
            {"LAGSCALER_TIMEOUT": "inf"},
            "",
            "$LAGSCALER_TIMEOUT: timeout: must be a finite number, got 'inf'",
        ),
        ([], {}, "timeout: .nan\n", "c.yaml: timeout: must be a finite number, got nan"),
        (
            ["--handover-control-topic", "handover control!"],
            {},
            "",
            "argument --handover-control-topic: string should match pattern '^[A-Za-z0-9._-]+$'",
        ),
        # a year at most, as every duration of a policy (and the chart's handover values)
        (
            ["--handover-verify-timeout", "1e300"],
            {},
            "",
            "argument --handover-verify-timeout: must be <= 31622400",
        ),
        (["--handover-revert-backoff", "31622401"], {}, "", "argument --handover-revert-backoff: must be <="),
        (
            ["--authentication-token-webhook-cache-ttl", "nan"],
            {},
            "",
            "argument --authentication-token-webhook-cache-ttl: must be a finite number",
        ),
        ([], {}, "policy-dir: [a, b]\n", "c.yaml: policy-dir: expected a single value"),
    ],
)
def test_every_error_names_the_source_of_the_value(
    tmp_path: Path, argv: list[str], environ: dict[str, str], file: str, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("bootstrap-server: k:1\n" + (file if "policy-dir" in file else "policy-dir: p\n" + file))
    with pytest.raises(UserError) as raised:
        parse(["--config", str(path), *argv], environ)
    assert message in str(raised.value)


@pytest.mark.parametrize("history", ["1", "10001", "99999999999999999999"])
def test_a_history_out_of_range_is_one_line_before_anything_starts(
    tmp_path: Path, history: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rings are allocated per partition up front: a huge ``--history`` would fail (or take all
    memory) when the first policy loads, long after start-up."""
    argv = ["serve", "--bootstrap-server", "127.0.0.1:9", "--policy-dir", str(tmp_path), "--history", history]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        f"--history must keep at {'least 2' if history == '1' else 'most 10000'} samples, got {history}"
        in err
    )


def test_a_state_file_that_names_a_directory_is_refused_and_the_directory_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--state-file /var/lib/lagscaler`` (the volume, not a file in it) used to be taken for an
    unreadable state file and renamed aside; an empty ``$LAGSCALER_STATE_FILE`` was a traceback."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "kept").write_text("the user's")
    argv = ["serve", "--bootstrap-server", "127.0.0.1:9", "--policy-dir", str(tmp_path)]
    assert main([*argv, "--state-file", str(volume)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--state-file must name a file, got '{volume}': a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]
    assert (volume / "kept").read_text() == "the user's"
    monkeypatch.setenv("LAGSCALER_STATE_FILE", "")
    assert main(argv) == 2
    assert "--state-file ($LAGSCALER_STATE_FILE) must name a file" in capsys.readouterr().err


def test_a_missing_setting_says_every_way_to_give_it() -> None:
    with pytest.raises(UserError) as raised:
        parse(["--policy-dir", "p"])
    assert str(raised.value) == (
        "missing setting bootstrap-server: give --bootstrap-server, $LAGSCALER_BOOTSTRAP_SERVER or "
        "'bootstrap-server:' in the --config file"
    )


def test_a_rule_across_settings_names_where_each_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ["LAGSCALER_TLS_CERT_FILE"] = "/x.crt"
    try:
        code = main(["serve", "--bootstrap-server", "k:1", "--policy-dir", str(tmp_path)])
    finally:
        del os.environ["LAGSCALER_TLS_CERT_FILE"]
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "--tls-cert-file ($LAGSCALER_TLS_CERT_FILE) and --tls-private-key-file must be given together" in err
    )


def test_debug_logs_say_which_source_set_each_setting_and_never_a_value(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    from lagscaler.options import log_sources

    path = tmp_path / "c.yaml"
    path.write_text("bootstrap-server: secret-host:1\npolicy-dir: p\n")
    parser = build_parser(_Parser(prog="serve", add_help=False))
    _, given = serve_options(
        parser.parse_args(["--config", str(path), "--sasl-username", "alice"]),
        {"LAGSCALER_CLIENT_ID": "hidden-id"},
    )
    log_sources(given)
    assert {(e["setting"], e["source"]) for e in logs} == {
        ("bootstrap-server", str(path)),
        ("policy-dir", str(path)),
        ("sasl-username", "--sasl-username"),
        ("client-id", "$LAGSCALER_CLIENT_ID"),
    }
    assert all(e["log_level"] == "debug" for e in logs)
    assert not any(secret in repr(logs) for secret in ("secret-host", "alice", "hidden-id"))


def test_flags_override_environment_which_overrides_the_file(config: Path) -> None:
    env = {"LAGSCALER_SAMPLE_INTERVAL": "7", "LAGSCALER_BOOTSTRAP_SERVER": "env-kafka:9092"}
    args = parse(["--config", str(config), "--sample-interval", "9"], env)
    assert args.sample_interval == 9
    assert args.bootstrap_server == "env-kafka:9092"
    args = parse(["--config", str(config)], env)
    assert args.sample_interval == 7
    args = parse(["--config", str(config)])
    assert args.sample_interval == 5
    assert args.bootstrap_server == "file-kafka:9092"
    assert args.authorization_always_allow is True
    assert args.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    assert args.policy_dir == Path("/etc/lagscaler/policies")


def test_the_state_file_comes_from_the_file_the_environment_or_a_flag(config: Path) -> None:
    assert parse(["--config", str(config)]).state_file is None  # off unless asked for
    with config.open("a") as out:
        out.write("state-file: /var/lib/lagscaler/engine.npz\n")
    assert parse(["--config", str(config)]).state_file == Path("/var/lib/lagscaler/engine.npz")
    env = {"LAGSCALER_STATE_FILE": "/data/engine.npz"}
    assert parse(["--config", str(config)], env).state_file == Path("/data/engine.npz")
    assert parse(["--config", str(config), "--state-file", "x.npz"], env).state_file == Path("x.npz")


def test_config_file_can_come_from_the_environment(config: Path) -> None:
    args = parse([], {"LAGSCALER_CONFIG": str(config)})
    assert args.bootstrap_server == "file-kafka:9092"


def test_false_in_the_file_leaves_a_switch_off(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("bootstrap-server: k:1\npolicy-dir: p\nauthorization-always-allow: false\n")
    assert not parse(["--config", str(path)]).authorization_always_allow


def _alias_bomb(levels: int = 7) -> str:
    """A flow list whose aliases expand to ``9 ** levels`` strings."""
    value = "&a0 [l, l, l, l, l, l, l, l, l]"
    for level in range(1, levels + 1):
        value = f"&a{level} [" + ", ".join([value] + [f"*a{level - 1}"] * 8) + "]"
    return value


BOMB = _alias_bomb()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "bootstrap-servers: k:9092\n",
            "unknown setting 'bootstrap-servers' (did you mean bootstrap-server?)",
        ),
        ("- a\n- b\n", "expected a mapping of settings"),
        ("secure-port: [1, {a: 2}]\n", "secure-port"),
        ("bootstrap-server: [unclosed\n", "not valid YAML"),
        ("authorization-always-allow: maybe\n", "expected true or false"),
        ("policy-dir: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deep"),
        ("bootstrap-server: caf\xe9:9092\n".encode("latin-1"), "not UTF-8 text (byte 21)"),
        # aliases make a value of 9**7 strings out of a few lines: the error quotes a little of it
        ("requestheader-allowed-names: " + BOMB + "\n", "requestheader-allowed-names: input should be"),
    ],
)
def test_bad_config_files_are_one_line_errors_naming_the_problem(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=r".*") as info:
        parse(["--config", str(path), "--bootstrap-server", "k:1", "--policy-dir", "p"])
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 500


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    code = main(["serve", "--bootstrap-server", "127.0.0.1:9", "--policy-dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1
    assert "policy directory" in err
    assert "does not exist" in err
    os.environ["LAGSCALER_SECURE_PORT"] = "https"
    try:
        assert main(["serve", "--bootstrap-server", "k:1", "--policy-dir", str(tmp_path)]) == 2
    finally:
        del os.environ["LAGSCALER_SECURE_PORT"]
    assert "$LAGSCALER_SECURE_PORT: secure-port: expected a number, got 'https'" in capsys.readouterr().err


@pytest.mark.kafka
def test_serve_runs_ready_and_stops_on_sigterm(kafka: KafkaEndpoint, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "demo.yaml").write_text(
        Path(__file__).resolve().parents[1].joinpath("policies", "clickstream.yaml").read_text()
    )
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"bootstrap-server: {kafka.bootstrap}\npolicy-dir: {policies}\nsample-interval: 1\n"
        f"bind-address: 127.0.0.1\nsecure-port: {port}\nmetrics-port: -1\n"
        "authentication-skip-lookup: true\nlog-format: json\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lagscaler", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # no certificate given: a self-signed one, for local use

        def ready() -> None:
            assert process.poll() is None, "lagscaler serve exited"
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/readyz", context=context, timeout=2
                ) as response:
                    assert response.status == 200
            except OSError as exc:  # not listening yet
                raise AssertionError(str(exc)) from exc

        asyncio.run(eventually(ready, within=60, what="/readyz to answer 200"))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "self-signed" in output.lower()  # the loud warning
        assert '"event": "lagscaler stopped"' in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
