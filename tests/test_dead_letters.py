"""Poison messages: a turn started DESKHAND_TURN_MAX_ATTEMPTS times without finishing is
dead-lettered (safe reply and ticket, once), resume skips it, and `deskhand dlq` retries or
drops it. The store's state here is exactly what killed processes leave behind: a row in
`processing` whose attempts `Store.inbox_start` counted; tests/test_dead_letters_run.py kills
real `deskhand run` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.brain.drafting import SAFE_FAILURE
from bot.contracts import Channel, MessageEnvelope
from bot.dead_letters import PROCESS_STOPPED
from bot.store import DELIVERED, PROCESSING, Store
from bot.surfaces import Surfaces

DESKHAND = str(Path(sys.executable).with_name("deskhand"))


class Collect:
    """The terminal's place in the responder path: records what reached the customer."""

    def __init__(self):
        self.replies: list[str] = []

    async def deliver(self, envelope, outcome):
        self.replies.append(outcome.reply)

    async def notify(self, session, text, **info):
        pass


def envelope(text: str = "where is order A-1042?", session: str = "s-poison") -> MessageEnvelope:
    return MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U1", session_id=session, text=text)


async def crashed(runtime, env: MessageEnvelope, times: int) -> None:
    """Leave the inbox as `times` processes that died mid-turn leave it."""
    await runtime.store.inbox_add(env)
    for attempt in range(times):
        await runtime.store.inbox_start(env.id, f"crashed-{attempt}")


def tickets(runtime) -> int:
    return runtime.shop.db["tickets"].count


def read(runtime, sql: str, params: list) -> list[tuple]:
    store = Store(runtime.settings.db_path)  # a second reader, as an operator's CLI would be
    try:
        return store.db.execute(sql, params).fetchall()
    finally:
        store.close()


def replies(runtime, inbox_id: str) -> int:
    return read(runtime, "SELECT count(*) FROM messages WHERE role = 'assistant' AND inbox_id = ?", [inbox_id])[0][0]


def tool_calls(runtime) -> list[str]:
    return [r[0] for r in read(runtime, "SELECT tool FROM tool_calls ORDER BY id", [])]


def dlq(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DESKHAND_HOME": str(home)}
    return subprocess.run([DESKHAND, "dlq", *args], env=env, capture_output=True, text=True, timeout=120)


async def test_a_turn_started_three_times_is_dead_lettered_not_run(runtime):
    collect = Collect()
    async with runtime.orchestrator.delivering_to(Surfaces(cli=collect)):
        env = envelope()
        await crashed(runtime, env, 3)

        [outcome] = await runtime.orchestrator.resume()

        assert outcome.state == "FAILED" and outcome.reply == SAFE_FAILURE and outcome.offer_human
        assert collect.replies == [SAFE_FAILURE]
        row = await runtime.store.inbox_get(env.id)
        assert row["status"] == DELIVERED and row["attempts"] == 3  # not started a fourth time
        assert tool_calls(runtime) == ["create_ticket"]  # no lookup: the turn itself never ran
        [dead] = await runtime.store.dead_letters()
        assert (dead["inbox_id"], dead["status"], dead["attempts"], dead["error"]) == (env.id, "dead", 3, PROCESS_STOPPED)
        assert tickets(runtime) == 1
        assert await runtime.store.dead_letter_count() == 1
        assert await runtime.store.dead_letter_count("T_DEMO") == 1
        assert await runtime.store.dead_letter_count("T_OTHER") == 0
        assert [a["action"] for a in await runtime.store.audit_entries(env.id)] == ["dead_letter"]

        assert await runtime.orchestrator.resume() == []  # the next start is clean
        assert collect.replies == [SAFE_FAILURE] and tickets(runtime) == 1


async def test_fewer_starts_than_the_limit_still_run_the_turn(runtime):
    env = envelope()
    await crashed(runtime, env, 2)
    [outcome] = await runtime.orchestrator.resume()
    assert outcome.state == "DONE" and "A-1042" in outcome.reply
    assert (await runtime.store.inbox_get(env.id))["attempts"] == 3
    assert await runtime.store.dead_letters() == [] and tickets(runtime) == 0


async def test_the_limit_is_a_setting(tmp_path):
    from bot.config import load_settings
    from bot.runtime import open_runtime

    async with open_runtime(load_settings(home=tmp_path / "h1", turn_max_attempts=1)) as runtime:
        env = envelope()
        await crashed(runtime, env, 1)
        [outcome] = await runtime.orchestrator.resume()
        assert outcome.reply == SAFE_FAILURE and await runtime.store.dead_letter_count() == 1


async def test_a_process_dying_while_dead_lettering_replies_and_tickets_once(runtime):
    collect = Collect()
    async with runtime.orchestrator.delivering_to(Surfaces(cli=collect)):
        env = envelope()
        await crashed(runtime, env, 3)
        await runtime.orchestrator.resume()
        # The process died after the ticket and the stored reply, before the inbox row was
        # marked answered: the next start dead-letters it again.
        await runtime.store.inbox_update(env.id, status=PROCESSING, outcome=None)

        [again] = await runtime.orchestrator.resume()

        assert again.reply == SAFE_FAILURE
        assert tickets(runtime) == 1 and replies(runtime, env.id) == 1
        assert len(await runtime.store.dead_letters()) == 1
        assert [a["action"] for a in await runtime.store.audit_entries(env.id)] == ["dead_letter"]
        # Each delivery is the responder's; the stored reply is the one the customer sees.
        assert collect.replies == [SAFE_FAILURE, SAFE_FAILURE]


async def test_the_last_error_an_attempt_recorded_is_kept(runtime):
    env = envelope()
    await crashed(runtime, env, 3)
    await runtime.store.inbox_update(env.id, error="TOOL_LOOP: TimeoutError")
    await runtime.orchestrator.resume()
    [dead] = await runtime.store.dead_letters()
    assert dead["error"] == "TOOL_LOOP: TimeoutError"


async def test_dlq_retry_runs_the_turn_once_more_and_drop_keeps_it_out(runtime, settings):
    collect = Collect()
    async with runtime.orchestrator.delivering_to(Surfaces(cli=collect)):
        retried, dropped = envelope(session="s-retry"), envelope("where is order A-1120?", session="s-drop")
        for env in (retried, dropped):
            await crashed(runtime, env, 3)
        await runtime.orchestrator.resume()
        assert collect.replies == [SAFE_FAILURE, SAFE_FAILURE]

        listed = dlq("list", home=settings.home)
        assert listed.returncode == 0, listed.stderr
        assert retried.id in listed.stdout and dropped.id in listed.stdout and PROCESS_STOPPED in listed.stdout

        shown = dlq("show", retried.id, "--json", home=settings.home)
        assert shown.returncode == 0, shown.stderr
        assert '"text": "where is order A-1042?"' in shown.stdout and '"attempts": 3' in shown.stdout

        assert dlq("retry", retried.id, "--as", "U_LEAD", home=settings.home).returncode == 0
        assert dlq("drop", dropped.id, "--as", "U_LEAD", home=settings.home).returncode == 0
        assert await runtime.store.dead_letter_count() == 0

        [outcome] = await runtime.orchestrator.resume()  # only the retried one, once
        assert outcome.inbox_id == retried.id and outcome.state == "DONE" and "A-1042" in outcome.reply
        assert collect.replies[2:] == [outcome.reply]
        assert await runtime.orchestrator.resume() == []
        row = await runtime.store.inbox_get(retried.id)
        assert row["status"] == DELIVERED and row["attempts"] == 1
        assert replies(runtime, retried.id) == 1  # the retried turn's answer is its reply now
        transcript = [m["text"] for m in await runtime.store.history("s-retry")]
        assert transcript.count(SAFE_FAILURE) == 1 and transcript[-1] == outcome.reply

        statuses = {d["inbox_id"]: d["status"] for d in await runtime.store.dead_letters(None)}
        assert statuses == {retried.id: "retried", dropped.id: "dropped"}
        assert [(a["action"], a["actor"]) for a in await runtime.store.audit_entries(dropped.id)] == [
            ("dead_letter", "deskhand"), ("dlq_drop", "U_LEAD")]
        assert [a["action"] for a in await runtime.store.audit_entries(retried.id)] == ["dead_letter", "dlq_retry"]

        again = dlq("retry", dropped.id, home=settings.home)  # dropped is for good
        assert again.returncode == 1 and "already dropped" in again.stderr
        assert (await runtime.store.inbox_get(dropped.id))["status"] == DELIVERED


async def test_a_retried_message_that_is_poison_again_is_dead_lettered_again(runtime):
    env = envelope()
    await crashed(runtime, env, 3)
    await runtime.orchestrator.resume()
    assert await runtime.store.dead_letter_retry(env.id, "U_LEAD") == "dead"
    for attempt in range(3):
        await runtime.store.inbox_start(env.id, f"again-{attempt}")

    [outcome] = await runtime.orchestrator.resume()

    assert outcome.reply == SAFE_FAILURE
    [dead] = await runtime.store.dead_letters()
    assert dead["status"] == "dead" and dead["retries"] == 1
    assert tickets(runtime) == 1  # the same ticket (same idempotency key) as the first time


def test_dlq_on_an_unknown_id_is_one_clear_line(tmp_path):
    for verb in ("show", "retry", "drop"):
        result = dlq(verb, "no-such-id", home=tmp_path / "home")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "No dead letter 'no-such-id'; `deskhand dlq list --all` lists them."], result.stderr


def test_an_outbox_row_given_up_is_a_dead_letter_to_show_drop_and_never_retry(settings):
    store = Store(settings.db_path)
    kept = store.outbox_add("T_DEMO", "email", "email:a", "mail_1", {"to": "ada@example.com", "subject": "Re: lamp"})
    gone = store.outbox_add("T_DEMO", "slack", "slack:s", "", {"team": "T_DEMO", "channel": "C1", "text": "A card"})
    for row_id in (kept, gone):
        store.outbox_mark_failed(row_id, "TemporarySendError: relay down", "2000-01-01T00:00:00+00:00")
        store.outbox_mark_failed(row_id, "TemporarySendError: relay down", None)  # the policy's last attempt
    store.close()

    listed = dlq("list", home=settings.home)
    assert f"outbox:{kept}  T_DEMO  dead  attempts=2" in listed.stdout and "email: TemporarySendError" in listed.stdout
    assert f"outbox:{gone}" in listed.stdout and "2 dead letter(s)" in listed.stdout
    shown = dlq("show", f"outbox:{kept}", "--json", home=settings.home)
    assert '"to": "ada@example.com"' in shown.stdout and '"action": "outbox_dead_letter"' in shown.stdout

    assert dlq("drop", f"outbox:{gone}", "--as", "U_LEAD", home=settings.home).returncode == 0
    again = dlq("retry", f"outbox:{gone}", home=settings.home)
    assert again.returncode == 1 and "already dropped" in again.stderr
    assert f"outbox:{gone}" not in dlq("list", home=settings.home).stdout
    assert f"outbox:{gone}  T_DEMO  dropped" in dlq("list", "--all", home=settings.home).stdout
    missing = dlq("retry", "outbox:999", home=settings.home)
    assert missing.stderr.strip() == "No dead letter 'outbox:999'; `deskhand dlq list --all` lists them."

    assert dlq("retry", f"outbox:{kept}", home=settings.home).returncode == 0
    store = Store(settings.db_path)
    try:
        [row] = store.outbox_rows("pending")
        assert row["id"] == kept and row["attempts"] == 0  # every attempt the policy allows, again
        assert [a["action"] for a in store.audit_entries(f"outbox:{gone}")] == ["outbox_dead_letter", "dlq_drop"]
        assert store.dead_letter_count() == 0  # the turns' gauge counts messages only
    finally:
        store.close()
