"""The mail bridge's tables: `email_threads`, and the email outbox over the shared `outbox`
table (through `StoreOutbox`), plus `deskhand mail outbox` and `deskhand mail retry`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from typer.testing import CliRunner

from bot.cli import app
from bot.outbox_policy import RetryPolicy
from bot.store import AsyncStore, Store
from mailbridge.outbox import Outbox, PermanentSendError, RelayConfig, TemporarySendError, build_reply
from mailbridge.parse import parse_message
from bot.store.mail_outbox import StoreOutbox
from tests.test_mail_bridge import email

runner = CliRunner()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def reply(mid: str = "<q1@example.com>"):
    return build_reply(parse_message(email(mid=mid)), text="It has shipped.", from_addr="support@deskhand.example")


def test_thread_keys_map_ids_to_their_first_session_and_subjects_to_the_newest(tmp_path):
    store = Store(tmp_path / "d.db")
    store.email_thread_record(["<a@x>", "subject:1"], "email:one", "T1")
    store.email_thread_record(["<a@x>", "<b@x>", "subject:1"], "email:two", "T1")
    assert store.email_thread_lookup(["<a@x>", "<b@x>", "subject:1", "<c@x>"], "T1") == {
        "<a@x>": "email:one", "<b@x>": "email:two", "subject:1": "email:two"}
    assert store.email_thread_lookup(["<a@x>"], "T2") == {}  # another tenant sees nothing
    assert store.email_threads_for("email:two") == ["<b@x>", "subject:1"]


async def test_the_outbox_over_sqlite_retries_gives_up_and_keeps_one_item_per_key(tmp_path):
    store = AsyncStore(Store(tmp_path / "d.db"))
    clock = Clock()
    attempts: list[bytes] = []
    answers = [TemporarySendError("relay down"), None, PermanentSendError("550 no such user")]

    async def send(raw: bytes, relay: RelayConfig) -> None:
        attempts.append(raw)
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    try:
        outbox = Outbox(StoreOutbox(store), RelayConfig(), send=send, clock=clock, policy=RetryPolicy(base_s=30, jitter=0))
        item = await outbox.enqueue(reply(), session_id="email:s", tenant_id="T1", inbox_id="mail_1", key="reply:mail_1")
        again = await outbox.enqueue(reply(), session_id="email:s", tenant_id="T1", inbox_id="mail_1", key="reply:mail_1")
        assert again.id == item.id and item.id.isdigit()

        assert (await outbox.run_once()).retrying == [item.id]
        [row] = await store.outbox_rows(channel="email")
        assert row["attempts"] == 1 and row["last_error"] == "TemporarySendError: relay down"
        assert row["payload"]["to"] == "ada@example.com" and row["payload"]["subject"] == "Re: Where is my lamp?"
        assert (await outbox.run_once()).retrying == []  # not due for 30 s
        clock.now += timedelta(seconds=31)
        assert (await outbox.run_once()).sent == [item.id]
        assert attempts[0] == attempts[1]  # the same bytes, the same Message-ID
        assert (await store.outbox_rows(channel="email"))[0]["status"] == "sent"

        dead = await outbox.enqueue(reply("<q2@example.com>"), tenant_id="T1", key="reply:mail_2")
        assert (await outbox.run_once()).dead == [dead.id]
        failed = await store.outbox_rows("failed", "email")
        assert [r["id"] for r in failed] == [int(dead.id)] and failed[0]["last_error"] == "550 no such user"
        assert await store.outbox_requeue(int(dead.id))
        assert not await store.outbox_requeue(int(item.id))  # sent stays sent
    finally:
        store.close()


def test_slack_style_outbox_calls_are_unchanged(tmp_path):
    store = Store(tmp_path / "d.db")
    row_id = store.outbox_add("T1", "slack", "slack:s", "in_1", {"team": "T1", "text": "hi"})
    assert [r["id"] for r in store.outbox_due("slack")] == [row_id]
    later = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
    store.outbox_mark_failed(row_id, "ratelimited", later)
    assert store.outbox_due("slack") == [] and store.outbox_rows("pending")[0]["attempts"] == 1
    assert store.outbox_due_now("email") == 0  # other channels are left alone
    store.outbox_mark_sent(row_id)
    assert store.outbox_rows("sent")[0]["sent_at"]


def test_mail_outbox_lists_items_with_attempts_and_errors_and_retry_requeues(settings):
    store = Store(settings.db_path)
    payload = {"raw": "", "to": "ada@example.com", "subject": "Re: Where is my lamp?", "message_id": "<r@x>"}
    sent = store.outbox_add("T_DEMO", "email", "email:a", "mail_1", payload, key="reply:1")
    store.outbox_mark_sent(sent)
    failed = store.outbox_add("T_DEMO", "email", "email:b", "mail_2", {**payload, "to": "bob@example.com"}, key="reply:2")
    store.outbox_mark_failed(failed, "550 5.1.1 no such user", None)
    pending = store.outbox_add("T_DEMO", "email", "email:c", "mail_3", {**payload, "to": "cy@example.com"}, key="reply:3")
    store.outbox_mark_failed(pending, "TemporarySendError: Connection refused", "2099-01-01T00:00:00+00:00")
    store.outbox_add("T_DEMO", "slack", "slack:s", "in_9", {"text": "not email"})
    store.close()

    listed = runner.invoke(app, ["mail", "outbox"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert "pending" in lines[0] and "cy@example.com" in lines[0] and "1 attempt(s)" in lines[0]
    assert "last error: TemporarySendError: Connection refused" in lines[1]
    assert any("failed" in line and "bob@example.com" in line for line in lines)
    assert "last error: 550 5.1.1 no such user" in listed.output
    assert any("sent" in line and "ada@example.com" in line for line in lines)
    assert "not email" not in listed.output

    only_failed = runner.invoke(app, ["mail", "outbox", "--status", "failed", "--json"])
    [item] = [json.loads(line) for line in only_failed.output.splitlines()]
    assert item["id"] == failed and item["attempts"] == 1 and item["last_error"] == "550 5.1.1 no such user"

    assert runner.invoke(app, ["mail", "retry", str(failed)]).exit_code == 0
    assert runner.invoke(app, ["mail", "retry", str(sent)]).exit_code == 1
    assert runner.invoke(app, ["mail", "retry", "999"]).exit_code == 1
    store = Store(settings.db_path)
    assert [r["id"] for r in store.outbox_rows("pending", "email")] == [failed, pending]
    store.close()


def test_every_mail_command_has_a_summary_and_an_example():
    for command in ("serve", "outbox", "retry", "parse"):
        result = runner.invoke(app, ["mail", command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, command
