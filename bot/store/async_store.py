"""`AsyncStore`: the store's typed async interface, every call run on one dedicated thread.

Each method is `Store`'s own, awaited: `await astore.inbox_add(envelope)` has `Store.inbox_add`'s
parameters and return type (through `ParamSpec`), so an editor's "go to definition" lands on
the SQL. A `Store` method that is not declared here is not reachable from async code; the
store tests check that the two lists match.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Concatenate, ParamSpec, TypeVar

from bot.store.sqlite import Store

P = ParamSpec("P")
R = TypeVar("R")


def _on_store_thread(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate["AsyncStore", P], Awaitable[R]]:
    """`Store.method` as an awaitable `AsyncStore` method that runs on the store thread."""
    name = method.__name__

    async def call(self: AsyncStore, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._run(partial(getattr(self.sync, name), *args, **kwargs))

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


class AsyncStore:
    """Runs every `Store` method on one dedicated thread: `await astore.inbox_add(...)`.

    Calls are queued and the store thread runs whatever has queued up in one go, then hands
    the results back to the event loop in one callback: under load (many turns at once) a
    thread hop is paid per batch rather than per call, which roughly triples how many store
    calls a second the process can make. Calls still run one at a time, in order.
    """

    def __init__(self, store: Store):
        self.sync = store
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="deskhand-store", daemon=True)
        self._thread.start()

    async def _run(self, call: Callable[[], R]) -> R:
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._calls.put((call, loop, future))
        return await future

    # -- The inbox: one row per inbound message, its turn's status and outcome
    inbox_add = _on_store_thread(Store.inbox_add)
    inbox_get = _on_store_thread(Store.inbox_get)
    inbox_envelope = _on_store_thread(Store.inbox_envelope)
    inbox_update = _on_store_thread(Store.inbox_update)
    inbox_start = _on_store_thread(Store.inbox_start)
    inbox_unfinished = _on_store_thread(Store.inbox_unfinished)
    inbox_latest = _on_store_thread(Store.inbox_latest)
    latest_case_before = _on_store_thread(Store.latest_case_before)
    inbox_count = _on_store_thread(Store.inbox_count)
    mark_processed = _on_store_thread(Store.mark_processed)
    mark_processed_all = _on_store_thread(Store.mark_processed_all)

    # -- Sessions and their messages
    session_get_or_create = _on_store_thread(Store.session_get_or_create)
    session_get = _on_store_thread(Store.session_get)
    session_update = _on_store_thread(Store.session_update)
    sessions_with_status = _on_store_thread(Store.sessions_with_status)
    someone_else_wrote_since = _on_store_thread(Store.someone_else_wrote_since)
    add_message = _on_store_thread(Store.add_message)
    message_for = _on_store_thread(Store.message_for)

    # -- Case state, tool calls and idempotent results
    history = _on_store_thread(Store.history)
    open_turn = _on_store_thread(Store.open_turn)
    case_state = _on_store_thread(Store.case_state)
    set_case_state = _on_store_thread(Store.set_case_state)
    record_tool_call = _on_store_thread(Store.record_tool_call)
    idempotent_result = _on_store_thread(Store.idempotent_result)

    # -- Pending actions (approvals)
    save_idempotent_result = _on_store_thread(Store.save_idempotent_result)
    pending_create = _on_store_thread(Store.pending_create)
    pending_get = _on_store_thread(Store.pending_get)
    pending_metadata = _on_store_thread(Store.pending_metadata)
    pending_update_metadata = _on_store_thread(Store.pending_update_metadata)
    pending_decide = _on_store_thread(Store.pending_decide)
    pending_reopen = _on_store_thread(Store.pending_reopen)
    pending_set_result = _on_store_thread(Store.pending_set_result)

    # -- Audit, traces, feedback and activity
    pending_list = _on_store_thread(Store.pending_list)
    audit = _on_store_thread(Store.audit)
    audit_entries = _on_store_thread(Store.audit_entries)
    trace = _on_store_thread(Store.trace)
    trace_many = _on_store_thread(Store.trace_many)
    traces_for = _on_store_thread(Store.traces_for)
    add_feedback = _on_store_thread(Store.add_feedback)

    # -- What leaves Deskhand: email threads, the Slack mirror, the outbox
    activity_since = _on_store_thread(Store.activity_since)
    email_thread_lookup = _on_store_thread(Store.email_thread_lookup)
    email_thread_record = _on_store_thread(Store.email_thread_record)
    email_threads_for = _on_store_thread(Store.email_threads_for)
    mirror_record = _on_store_thread(Store.mirror_record)
    mirror_thread = _on_store_thread(Store.mirror_thread)
    thread_owner = _on_store_thread(Store.thread_owner)
    mirror_session = _on_store_thread(Store.mirror_session)
    outbox_add = _on_store_thread(Store.outbox_add)
    outbox_due = _on_store_thread(Store.outbox_due)
    outbox_mark_sent = _on_store_thread(Store.outbox_mark_sent)
    outbox_mark_failed = _on_store_thread(Store.outbox_mark_failed)

    # -- Dead letters, shadow turns, 👎 reasons and replay
    outbox_due_now = _on_store_thread(Store.outbox_due_now)
    outbox_requeue = _on_store_thread(Store.outbox_requeue)
    outbox_rows = _on_store_thread(Store.outbox_rows)
    dead_letter_add = _on_store_thread(Store.dead_letter_add)
    dead_letter_get = _on_store_thread(Store.dead_letter_get)
    dead_letters = _on_store_thread(Store.dead_letters)
    dead_letter_count = _on_store_thread(Store.dead_letter_count)
    dead_letter_retry = _on_store_thread(Store.dead_letter_retry)
    dead_letter_drop = _on_store_thread(Store.dead_letter_drop)
    outbox_give_up = _on_store_thread(Store.outbox_give_up)
    outbox_dead_letters = _on_store_thread(Store.outbox_dead_letters)
    outbox_dead_letter_get = _on_store_thread(Store.outbox_dead_letter_get)
    outbox_dead_letter_retry = _on_store_thread(Store.outbox_dead_letter_retry)
    outbox_dead_letter_drop = _on_store_thread(Store.outbox_dead_letter_drop)
    shadow_record = _on_store_thread(Store.shadow_record)
    shadow_runs = _on_store_thread(Store.shadow_runs)
    feedback_add_reasons = _on_store_thread(Store.feedback_add_reasons)
    feedback_get = _on_store_thread(Store.feedback_get)
    replayable_turns = _on_store_thread(Store.replayable_turns)

    # -- Approver user groups, as Slack last returned them (bot/hands/gate.py)
    usergroup_members_save = _on_store_thread(Store.usergroup_members_save)
    usergroup_members = _on_store_thread(Store.usergroup_members)

    # -- The rows `deskhand report` is computed from (reports.py)
    report_turn_channels = _on_store_thread(Store.report_turn_channels)
    report_trace_rows = _on_store_thread(Store.report_trace_rows)
    report_tool_call_rows = _on_store_thread(Store.report_tool_call_rows)
    report_inbox_outcomes = _on_store_thread(Store.report_inbox_outcomes)
    report_flagged_inbox_rows = _on_store_thread(Store.report_flagged_inbox_rows)
    report_feedback_rows = _on_store_thread(Store.report_feedback_rows)

    def _serve(self) -> None:
        while True:
            batch = [self._calls.get()]
            while True:
                try:
                    batch.append(self._calls.get_nowait())
                except queue.Empty:
                    break
            done: dict[asyncio.AbstractEventLoop, list] = {}
            for item in batch:
                if item is None:  # close(): everything queued before it has run
                    self._hand_back(done)
                    return
                fn, loop, future = item
                try:
                    outcome = (fn(), None)
                except BaseException as exc:  # handed to the caller, as run_in_executor would
                    outcome = (None, exc)
                if loop is not None:
                    done.setdefault(loop, []).append((future, outcome))
            self._hand_back(done)

    @staticmethod
    def _hand_back(done: dict) -> None:
        for loop, results in done.items():
            try:
                loop.call_soon_threadsafe(_resolve, results)
            except RuntimeError:  # that loop has closed; nobody is waiting any more
                pass

    def close(self) -> None:
        # Close on the store thread so the connection is only ever used from it.
        if self._closed:
            return
        self._closed = True
        closed: concurrent.futures.Future = concurrent.futures.Future()

        def close_store() -> None:
            try:
                self.sync.close()
            except BaseException as exc:
                closed.set_exception(exc)
            else:
                closed.set_result(None)

        self._calls.put((close_store, None, None))
        self._calls.put(None)
        self._thread.join()
        closed.result()


def _resolve(results: list) -> None:
    for future, (value, exc) in results:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
