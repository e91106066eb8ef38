"""The handover controller against a broker that refuses it, not one that is down.

One broker for the module with a SASL_PLAINTEXT listener (PLAIN) and Kafka's StandardAuthorizer:
``alice`` is a super user, ``mallory`` authenticates but has no ACL at all. A wrong password and a
missing ACL are refusals that no retry fixes until someone changes something: each attempt must be an
ERROR that says what to change, and the controller must pick the change up without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import BrokerConfig, LocalBroker
from lagscaler_demo.localkafka.tools import KafkaTools
from structlog.typing import EventDict
from support import eventually

from lagscaler.edges.handover import HandoverRunner, HandoverSettings
from lagscaler.edges.handover import controller as controller_module
from lagscaler.edges.kafka import KafkaSettings, SaslMechanism, SaslSettings, Secret, SecurityProtocol
from lagscaler.errors import UserError
from lagscaler.service.handover import LocalHandover, local_runner
from lagscaler.worker import HandoverIdentity, Worker, WorkerConfig

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule required"
USERS = {"alice": "alice-pw-71c0", "mallory": "mallory-pw-2b9e"}
REFUSED = "handover control topic refused; retrying"
UNREACHABLE = "handover control topic unreachable; retrying"


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    users = " ".join(f'user_{name}="{password}"' for name, password in USERS.items())
    config = BrokerConfig(
        extra_listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        extra_properties={
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": f"{PLAIN} {users};",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The PLAINTEXT and controller listeners (the broker itself) authenticate as ANONYMOUS.
            "super.users": "User:ANONYMOUS;User:alice",
        },
    )
    with LocalBroker(config) as running:
        yield running


def settings_for(broker: LocalBroker, user: str, password_file: Path) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=(broker.address("SASL_PLAINTEXT"),),
        security_protocol=SecurityProtocol.SASL_PLAINTEXT,
        sasl=SaslSettings(SaslMechanism.PLAIN, user, Secret.from_file(password_file)),
        request_timeout=3.0,
    )


@contextlib.asynccontextmanager
async def entering(runner: HandoverRunner) -> Iterator[asyncio.Future[HandoverRunner]]:  # type: ignore[misc]
    task = asyncio.ensure_future(runner.__aenter__())
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif task.exception() is None:
            await runner.__aexit__(None, None, None)


async def test_a_wrong_password_is_an_error_each_attempt_and_the_fixed_file_is_picked_up(
    broker: LocalBroker,
    unique: str,
    tmp_path: Path,
    logs: list[EventDict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was: a warning "unreachable" per attempt, retried forever, and the channel kept the password it
    read first, so even a corrected Secret needed a restart. Now every attempt is an ERROR naming the
    cause and the flags to check, attempts come at the longest pause, and the corrected password file
    is read by the next one."""
    monkeypatch.setattr(controller_module, "CONNECT_BACKOFF_MAX", 1.0)  # the pause; 30 s in serve
    password = tmp_path / "password"
    password.write_text("not-alices-password\n")
    handover = HandoverSettings(control_topic=f"{unique}-control", tick=0.2)
    runner = local_runner(settings_for(broker, "alice", password), LocalHandover(tmp_path, settings=handover))
    async with entering(runner) as entered:

        def refused_twice() -> None:
            assert not entered.done(), entered
            refused = [e for e in logs if e["event"] == REFUSED]
            assert len(refused) >= 2, logs
            for event in refused:
                assert event["log_level"] == "error"
                assert event["topic"] == handover.control_topic
                assert "SaslAuthenticationFailed" in event["problem"] or "uthentication" in event["problem"]
                assert "SASL authentication failed" in event["fix"]
                assert "--sasl-password-file" in event["fix"]
                assert event["retry_in"] == 1.0

        await eventually(refused_twice, within=60, what="an error per refused attempt")
        assert not [e for e in logs if e["event"] == UNREACHABLE]  # not mistaken for an outage
        assert "not-alices-password" not in repr(logs)

        password.write_text(USERS["alice"] + "\n")  # the Secret, rotated
        await eventually(entered.done, within=60, what="the runner reaching the control topic")
        entered.result()
        await eventually(lambda: runner.leading, within=60, what="the runner leading")


async def test_a_principal_without_acls_is_told_which_to_grant_and_goes_on_once_granted(
    broker: LocalBroker,
    *,
    unique: str,
    tmp_path: Path,
    logs: list[EventDict],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was: the refused Describe went unnoticed, the Create was refused silently, and the runner
    waited 30 s for a leader of a topic it may not see, then warned "no leader" — forever. Now the
    first attempt names the ACLs to grant; granted (Kafka's own kafka-acls), the next attempt goes
    on without a restart. Revoked while it runs, the channel's reads are ERRORs naming the fix."""
    monkeypatch.setattr(controller_module, "CONNECT_BACKOFF_MAX", 1.0)  # the pause; 30 s in serve
    password = tmp_path / "password"
    password.write_text(USERS["mallory"])
    handover = HandoverSettings(control_topic=f"{unique}-control", tick=0.2)
    runner = local_runner(
        settings_for(broker, "mallory", password), LocalHandover(tmp_path, settings=handover)
    )
    async with entering(runner) as entered:

        def refused() -> None:
            assert not entered.done(), entered
            attempts = [e for e in logs if e["event"] in (REFUSED, UNREACHABLE)]
            assert attempts, logs
            event = attempts[0]
            assert event["event"] == REFUSED, event
            assert event["log_level"] == "error"
            assert f"control topic {handover.control_topic} refused" in event["problem"]
            assert (
                "Topic authorization failed" in event["problem"] or "TOPIC_AUTHORIZATION" in event["problem"]
            )
            assert "grant it Describe, Read and Write on the control topic" in event["fix"]
            assert event["retry_in"] == 1.0

        await eventually(refused, within=20, what="the refusal, named")

        acl = ("--allow-principal", "User:mallory", "--operation", "All", "--topic", handover.control_topic)
        await asyncio.to_thread(acls, broker, "--add", *acl)
        await eventually(entered.done, within=60, what="the runner going on once granted")
        entered.result()
        await eventually(lambda: runner.leading, within=60, what="the runner leading")

        caplog.set_level(logging.ERROR, logger="lagscaler.edges.handover.channel")
        await asyncio.to_thread(acls, broker, "--remove", "--force", *acl)

        def read_refused() -> None:
            errors = [r.getMessage() for r in caplog.records if r.name == "lagscaler.edges.handover.channel"]
            assert any(
                f"control topic {handover.control_topic} read refused" in m and "grant it" in m
                for m in errors
            ), errors

        await eventually(read_refused, within=60, what="the revoked reads, named")


def acls(broker: LocalBroker, *args: str) -> None:
    """Kafka's own ``kafka-acls`` over the PLAINTEXT listener (a super user)."""
    done = KafkaTools().run(
        "org.apache.kafka.tools.AclCommand", "--bootstrap-server", broker.bootstrap, *args
    )
    assert done.returncode == 0, done.stderr


async def test_a_worker_with_a_wrong_password_ends_at_once_naming_the_fix(
    broker: LocalBroker, unique: str, tmp_path: Path
) -> None:
    """A worker waits for a Kafka that is away (tests/test_worker_runtime.py), but not for one that
    refuses it: aiokafka raises only "Unable to bootstrap" and logs the SASL failure, which the worker
    must read to tell the two apart, or it would retry a wrong password for good."""
    wrong = tmp_path / "password"
    wrong.write_text("not-alice's")
    options = settings_for(broker, "alice", wrong).client_options()
    config = WorkerConfig(
        bootstrap=(broker.address("SASL_PLAINTEXT"),),
        group=f"{unique}-gen-1",
        topics=(f"{unique}-in",),
        worker=f"{unique}-w",
        handover=HandoverIdentity(f"test/{unique}", 1, f"{unique}-control"),
        client_options={k: v for k, v in options.items() if k != "bootstrap_servers"},
    )

    async def handle(batch: object) -> None:
        raise AssertionError("nothing can be consumed")

    worker = Worker(config, batch_handler=handle)
    with pytest.raises(UserError) as refused:
        await asyncio.wait_for(worker.serve(), 60)  # a bound for a hang, not a timing claim
    assert "SASL authentication failed" in str(refused.value), refused.value
