"""The Slack emulator against the real slack-sdk and slack-bolt clients.

Every test drives the emulator through ``AsyncWebClient`` (aiohttp) or a bolt ``AsyncApp`` on
``AsyncSocketModeHandler`` over a real WebSocket (or, for HTTP mode, on bolt's own aiohttp
server), so what passes here passes against Slack's wire protocol as ``SLACK_PROTOCOL.md``
describes it.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import aiohttp
import aiohttp.web
import pytest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from slack_emulator import SlackEmulator, Workspace

FIXTURES = Path(__file__).parent / "fixtures_slack"
PING_INTERVAL = 0.2  # seconds; small so that a lost socket is noticed quickly


@pytest.fixture
async def emu():
    acme = Workspace("T0ACME0001", name="Acme")
    acme.add_user("U0ALICE01", "alice", email="alice@acme.example")
    acme.add_user("U0BOB0001", "bob", is_admin=True)
    acme.add_channel("C0SUPPORT1", "support", ["U0ALICE01", "U0BOB0001"])
    acme.add_usergroup("S0APPROVE1", ["U0BOB0001"])
    globex = Workspace("T0GLOBEX01", name="Globex")
    globex.add_channel("C0GLOBEX01", "help")
    async with SlackEmulator([acme, globex]) as emu:
        yield emu


@pytest.fixture
def client(emu):
    return AsyncWebClient(token=emu.team.bot_token, base_url=emu.api_url)


@pytest.fixture
def app(client):
    return AsyncApp(client=client)


@pytest.fixture
async def handler(emu, app):
    handler = AsyncSocketModeHandler(app, app_token=emu.team.app_token, ping_interval=PING_INTERVAL)
    yield handler
    await handler.close_async()


# ------------------------------------------------------------------ Web API


async def test_auth_test_identifies_the_workspace_and_bot(emu, client):
    response = await client.auth_test()

    assert response["team_id"] == "T0ACME0001"
    assert response["user_id"] == emu.team.bot_user_id
    assert response["bot_id"] == emu.team.bot_id
    assert "chat:write" in response.headers["x-oauth-scopes"]
    assert [(c.method, c.team) for c in emu.calls] == [("auth.test", "T0ACME0001")]


async def test_wrong_tokens_and_unknown_methods_are_rejected(emu):
    with pytest.raises(SlackApiError) as bad:
        await AsyncWebClient(token="xoxb-not-a-token", base_url=emu.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"

    app_token_client = AsyncWebClient(token=emu.team.app_token, base_url=emu.api_url)
    with pytest.raises(SlackApiError) as wrong_kind:
        await app_token_client.chat_postMessage(channel="C0SUPPORT1", text="hi")
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"

    with pytest.raises(SlackApiError) as unknown:
        await AsyncWebClient(token=emu.team.bot_token, base_url=emu.api_url).api_call("chat.teleport")
    assert unknown.value.response["error"] == "unknown_method"
    assert emu.messages("C0SUPPORT1") == []


async def test_post_reply_update_and_read_back_a_thread(emu, client):
    parent = await client.chat_postMessage(channel="C0SUPPORT1", text="Looking into it…")
    reply = await client.chat_postMessage(channel="C0SUPPORT1", thread_ts=parent["ts"],
                                          text="Still looking", blocks=[{"type": "divider"}])
    updated = await client.chat_update(channel="C0SUPPORT1", ts=reply["ts"], text="Here is the answer")

    assert float(reply["ts"]) > float(parent["ts"])
    assert reply["message"]["thread_ts"] == parent["ts"]
    assert updated["message"]["edited"]["user"] == emu.team.bot_user_id
    stored = emu.message("C0SUPPORT1", reply["ts"])
    assert (stored["text"], stored["blocks"]) == ("Here is the answer", [{"type": "divider"}])
    thread = await client.conversations_replies(channel="C0SUPPORT1", ts=parent["ts"])
    assert [m["ts"] for m in thread["messages"]] == [parent["ts"], reply["ts"]]
    assert thread["messages"][0]["reply_count"] == 1
    assert (await emu.wait_for_call("chat.update")).params["ts"] == reply["ts"]

    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel="C0SUPPORT1", ts="1.000001", text="nope")
    assert missing.value.response["error"] == "message_not_found"
    await client.chat_delete(channel="C0SUPPORT1", ts=reply["ts"])
    assert emu.message("C0SUPPORT1", reply["ts"]) is None


async def test_posting_to_a_user_id_opens_the_dm(emu, client):
    response = await client.chat_postMessage(channel="U0ALICE01", text="Hello Alice")

    assert response["channel"] == emu.team.im_channel("U0ALICE01")
    assert emu.messages(response["channel"])[0]["text"] == "Hello Alice"


async def test_long_text_is_truncated_with_a_warning(emu, client):
    response = await client.chat_postMessage(channel="C0SUPPORT1", text="x" * 40_001)

    assert response["response_metadata"]["warnings"] == ["message_truncated"]
    assert len(emu.message("C0SUPPORT1", response["ts"])["text"]) == 40_000


async def test_the_sdk_warns_when_blocks_come_without_text(emu, client):
    # Under filterwarnings=error this UserWarning fails a test: always send `text` with blocks.
    with pytest.warns(UserWarning, match="top-level `text` argument is missing"):
        await client.chat_postMessage(channel="C0SUPPORT1", blocks=[{"type": "divider"}])


async def test_rate_limit_is_retried_after_retry_after(emu, client):
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    emu.fail_next("chat.postMessage", status=429, retry_after=1)

    response = await client.chat_postMessage(channel="C0SUPPORT1", text="hello")

    first, second = emu.calls_to("chat.postMessage")
    assert (first.status, first.response) == (429, {"ok": False, "error": "ratelimited"})
    assert second.status == 200 and response["ok"]
    assert second.time - first.time >= 1.0  # the SDK honoured Retry-After
    assert len(emu.messages("C0SUPPORT1")) == 1


async def test_rate_limit_without_a_retry_handler_raises_with_the_header(emu, client):
    emu.fail_next("chat.postMessage", status=429, retry_after=7)

    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C0SUPPORT1", text="hello")

    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert limited.value.response["error"] == "ratelimited"


async def test_server_errors_and_slack_errors_can_be_injected(emu, client):
    emu.fail_next("chat.update", status=500, times=2)
    emu.fail_next("chat.postMessage", error="channel_not_found")

    with pytest.raises(SlackApiError) as slack_error:
        await client.chat_postMessage(channel="C0SUPPORT1", text="hi")
    for _ in range(2):
        with pytest.raises(SlackApiError) as server_error:
            await client.chat_update(channel="C0SUPPORT1", ts="1.1", text="hi")
        assert server_error.value.response.status_code == 500
    with pytest.raises(SlackApiError) as third:
        await client.chat_update(channel="C0SUPPORT1", ts="1.1", text="hi")

    assert (slack_error.value.response.status_code, slack_error.value.response["error"]) == (200, "channel_not_found")
    assert third.value.response["error"] == "message_not_found"  # the faults are used up
    assert (await client.chat_postMessage(channel="C0SUPPORT1", text="hi"))["ok"]


async def test_query_string_form_and_json_calls(emu, client):
    alice = await client.users_info(user="U0ALICE01", include_locale=True)  # GET, query string
    approvers = await client.usergroups_users_list(usergroup="S0APPROVE1")
    first_page = await client.conversations_members(channel="C0SUPPORT1", limit=2)
    second_page = await client.conversations_members(
        channel="C0SUPPORT1", limit=2, cursor=first_page["response_metadata"]["next_cursor"])
    posted = await client.api_call("chat.postMessage", data={  # a form body, blocks as JSON text
        "channel": "C0SUPPORT1", "text": "form", "blocks": json.dumps([{"type": "divider"}])})
    await client.reactions_add(channel="C0SUPPORT1", name="eyes", timestamp=posted["ts"])  # POST query
    ephemeral = await client.chat_postEphemeral(channel="C0SUPPORT1", user="U0BOB0001", text="psst")
    home = await client.views_publish(user_id="U0ALICE01", view={"type": "home", "blocks": []})

    assert alice["user"]["profile"]["email"] == "alice@acme.example"
    assert approvers["users"] == ["U0BOB0001"]
    assert first_page["members"] + second_page["members"] == ["U0ALICE01", "U0BOB0001", emu.team.bot_user_id]
    assert second_page["response_metadata"]["next_cursor"] == ""
    stored = emu.message("C0SUPPORT1", posted["ts"])
    assert stored["blocks"] == [{"type": "divider"}]
    assert stored["reactions"] == [{"name": "eyes", "users": [emu.team.bot_user_id], "count": 1}]
    assert emu.team.ephemerals[0]["message_ts"] == ephemeral["message_ts"]
    assert emu.team.home_views["U0ALICE01"]["id"] == home["view"]["id"]
    assert emu.calls_to("users.info")[0].params == {"user": "U0ALICE01", "include_locale": "1"}


async def test_workspaces_do_not_see_each_other(emu):
    globex = AsyncWebClient(token=emu.workspaces["T0GLOBEX01"].bot_token, base_url=emu.api_url)

    with pytest.raises(SlackApiError) as channel:
        await globex.chat_postMessage(channel="C0SUPPORT1", text="hi")
    with pytest.raises(SlackApiError) as user:
        await globex.users_info(user="U0ALICE01")

    assert channel.value.response["error"] == "channel_not_found"
    assert user.value.response["error"] == "user_not_found"
    assert (await globex.auth_test())["team_id"] == "T0GLOBEX01"


# ------------------------------------------------------------------ Socket Mode


async def test_socket_mode_wire_protocol(emu):
    opened = await AsyncWebClient(base_url=emu.api_url).apps_connections_open(app_token=emu.team.app_token)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(opened["url"], autoping=False) as ws:
            hello = await ws.receive_json()
            await ws.ping(b"sdk-ping-pong:1700000000.5")
            pong = await ws.receive()
            envelope_id = await emu.push_slash_command(
                emu.team, emu.slash_command(emu.team, "U0BOB0001", "C0SUPPORT1", "status"))
            envelope = await ws.receive_json()
            await ws.send_json({"envelope_id": envelope_id, "payload": {"text": "all good"}})
            assert await emu.wait_for_ack(envelope_id) == {"text": "all good"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as reused:
            await session.ws_connect(opened["url"])  # each URL works once

    assert (hello["type"], hello["connection_info"]["app_id"]) == ("hello", emu.team.app_id)
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"sdk-ping-pong:1700000000.5")
    assert (envelope["envelope_id"], envelope["type"], envelope["accepts_response_payload"]) == (
        envelope_id, "slash_commands", True)
    assert reused.value.status == 401
    await emu.wait_for(lambda e: e.connection_count == 0)




async def test_app_mention_reaches_bolt_and_is_acked(emu, app, handler):
    seen = []

    @app.event("app_mention")
    async def on_mention(event, say):
        seen.append(event)
        await say(text="Looking into it…", thread_ts=event["ts"])

    await handler.connect_async()
    mention = emu.mention(emu.team, "U0ALICE01", "C0SUPPORT1", "where is my order?")
    envelope_id = await emu.push_event(emu.team, mention)

    assert await emu.wait_for_ack(envelope_id) is None  # events are acked with no payload
    reply = await emu.wait_for_call("chat.postMessage")
    assert reply.params["thread_ts"] == mention["ts"]
    assert seen[0]["text"] == f"<@{emu.team.bot_user_id}> where is my order?"
    assert [c.method for c in emu.calls][:2] == ["apps.connections.open", "auth.test"]  # auth.test is lazy
    assert [m["ts"] for m in emu.messages("C0SUPPORT1")] == [mention["ts"], reply.response["ts"]]


async def test_a_dm_reaches_a_message_listener(emu, app, handler):
    @app.message()
    async def on_message(message, say):
        await say(text=f"you said {message['text']} in a {message['channel_type']}")

    await handler.connect_async()
    await emu.push_event(emu.team, emu.dm(emu.team, "U0ALICE01", "hello"))

    reply = await emu.wait_for_call("chat.postMessage")
    assert reply.params["channel"] == emu.team.im_channel("U0ALICE01")
    assert reply.params["text"] == "you said hello in a im"
    assert reply.params["team_id"] == "T0ACME0001"  # bolt's per-request client adds the team


async def test_events_queued_while_no_app_is_connected_are_delivered_on_connect(emu, app, handler):
    @app.event("app_mention")
    async def on_mention():
        pass

    envelope_id = await emu.push_event(emu.team, emu.mention(emu.team, "U0BOB0001", "C0SUPPORT1", "hi"))
    assert envelope_id not in emu.acks
    await handler.connect_async()

    await emu.wait_for_ack(envelope_id)


async def test_unhandled_events_are_not_acked_and_own_messages_are(emu, app, handler):
    @app.event("app_mention")
    async def on_mention():
        pass

    await handler.connect_async()
    edit = await emu.push_event(emu.team, emu.message_changed(emu.team, "C0SUPPORT1", "1.000001", "x"))
    own = await emu.push_event(emu.team, emu.bot_message(emu.team, "C0SUPPORT1", "answer", own=True))
    handled = await emu.push_event(emu.team, emu.mention(emu.team, "U0ALICE01", "C0SUPPORT1", "hi"))

    await emu.wait_for_ack(handled)
    await emu.wait_for_ack(own)  # bolt's self-event filter acks Deskhand's own messages
    assert edit not in emu.acks  # no listener matched: bolt sends no ack at all
    assert emu.envelopes[edit]["payload"]["event"]["subtype"] == "message_changed"


async def test_a_retry_keeps_the_event_id_and_carries_retry_headers(emu, app, handler):
    deliveries = []

    @app.event("app_mention")
    async def on_mention(body, request):
        deliveries.append((body["event_id"], request.headers.get("x-slack-retry-num")))

    await handler.connect_async()
    mention = emu.mention(emu.team, "U0ALICE01", "C0SUPPORT1", "hi")
    first = await emu.push_event(emu.team, mention)
    event_id = emu.envelopes[first]["payload"]["event_id"]
    retry = await emu.push_event(emu.team, mention, retry_attempt=1, event_id=event_id)

    await emu.wait_for(lambda _: len(deliveries) == 2)
    assert emu.envelopes[retry]["retry_reason"] == "timeout"
    # Unlike HTTP mode, Socket Mode sends x-slack-retry-num on first deliveries too: "0".
    assert sorted(deliveries) == [(event_id, ["0"]), (event_id, ["1"])]


async def test_disconnect_makes_the_app_reconnect(emu, app, handler):
    @app.event("app_mention")
    async def on_mention():
        pass

    await handler.connect_async()
    await emu.wait_for(lambda e: e.connection_count == 1)
    await emu.send_disconnect(reason="refresh_requested")

    await emu.wait_for(lambda e: e.connections_opened == 2 and e.connection_count == 1)
    assert len(emu.calls_to("apps.connections.open")) == 2
    envelope_id = await emu.push_event(emu.team, emu.mention(emu.team, "U0ALICE01", "C0SUPPORT1", "hi"))
    await emu.wait_for_ack(envelope_id)


async def test_a_dropped_socket_is_replaced(emu, app, handler):
    @app.event("app_mention")
    async def on_mention():
        pass

    await handler.connect_async()
    await emu.wait_for(lambda e: e.connection_count == 1)
    await emu.drop_sockets()

    await emu.wait_for(lambda e: e.connections_opened == 2 and e.connection_count == 1)
    assert len(emu.calls_to("apps.connections.open")) == 2
    envelope_id = await emu.push_event(emu.team, emu.mention(emu.team, "U0ALICE01", "C0SUPPORT1", "hi"))
    await emu.wait_for_ack(envelope_id)


async def test_button_click_respond_replaces_the_original_message(emu, client, app, handler):
    @app.action("approve")
    async def on_approve(ack, body, respond):
        await ack()
        await respond(replace_original=True, text=f"Approved by <@{body['user']['id']}>")

    posted = await client.chat_postMessage(channel="C0SUPPORT1", text="Refund $20?")
    await handler.connect_async()
    click = emu.block_action(emu.team, "U0BOB0001", "C0SUPPORT1", posted["ts"], "approve", "refund-1")
    envelope_id = await emu.push_interactive(emu.team, click)

    await emu.wait_for_ack(envelope_id)
    await emu.wait_for_call("response_url")
    assert click["message"]["text"] == "Refund $20?"
    assert emu.message("C0SUPPORT1", posted["ts"])["text"] == "Approved by <@U0BOB0001>"


async def test_slash_command_ack_text_comes_back_in_the_ack(emu, app, handler):
    @app.command("/deskhand")
    async def on_command(ack, command):
        await ack(f"status for {command['user_name']}: {command['text']}")

    await handler.connect_async()
    envelope_id = await emu.push_slash_command(
        emu.team, emu.slash_command(emu.team, "U0BOB0001", "C0SUPPORT1", "kb status"))

    assert await emu.wait_for_ack(envelope_id) == {"text": "status for bob: kb status"}


# ------------------------------------------------------------------ HTTP mode (Request URL)


@pytest.fixture
async def request_url(emu):
    """A bolt AsyncApp on its own aiohttp server (bolt's `web_app`), checking signatures with the
    workspace's signing secret; the emulator's workspace is pointed at it."""
    app = AsyncApp(client=AsyncWebClient(token=emu.team.bot_token, base_url=emu.api_url),
                   signing_secret=emu.team.signing_secret)
    runner = aiohttp.web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await aiohttp.web.SockSite(runner, sock).start()
    emu.use_request_url(emu.team, f"http://127.0.0.1:{port}/slack/events")
    yield app
    await runner.cleanup()


async def test_http_deliveries_are_signed_as_slack_signs_them_and_a_retry_carries_its_headers(emu, request_url):
    seen = []

    @request_url.event("app_mention")
    async def on_mention(body, request):
        seen.append((body["event_id"], request.headers.get("x-slack-retry-num")))

    @request_url.action("approve")
    async def on_click(ack, body):
        await ack()
        seen.append((body["actions"][0]["value"], None))

    @request_url.command("/deskhand")
    async def on_command(ack, command):
        await ack(f"status: {command['text']}")

    verification = await emu.verify_request_url(emu.team)
    assert verification.acked and json.loads(verification.response)["challenge"] == json.loads(verification.body)["challenge"]

    mention = emu.mention(emu.team, "U0ALICE01", "C0SUPPORT1", "hi")
    first = await emu.wait_for_delivery(await emu.push_event(emu.team, mention))
    event_id = json.loads(first.body)["event_id"]
    retry = await emu.wait_for_delivery(await emu.push_event(emu.team, mention, retry_attempt=2, event_id=event_id))
    click = await emu.wait_for_delivery(await emu.push_interactive(emu.team, emu.block_action(
        emu.team, "U0BOB0001", "C0SUPPORT1", "1.000001", "approve", "refund-1")))
    command_id = await emu.push_slash_command(emu.team, emu.slash_command(emu.team, "U0BOB0001", "C0SUPPORT1", "kb"))

    assert await emu.wait_for_delivery(command_id) and emu.acks[command_id] == {"text": "status: kb"}
    assert [first.status, retry.status, click.status] == [200, 200, 200]
    assert "X-Slack-Retry-Num" not in first.headers  # unlike Socket Mode, a first delivery has none
    assert (retry.headers["X-Slack-Retry-Num"], retry.headers["X-Slack-Retry-Reason"]) == ("2", "http_timeout")
    assert seen == [(event_id, None), (event_id, ["2"]), ("refund-1", None)]


async def test_http_deliveries_with_a_wrong_secret_or_an_old_timestamp_are_refused(emu, request_url):
    @request_url.event("app_mention")
    async def on_mention():
        raise AssertionError("a refused request reached a listener")

    mention = emu.mention(emu.team, "U0ALICE01", "C0SUPPORT1", "hi")
    wrong = await emu.wait_for_delivery(await emu.push_event(emu.team, mention, signed_with="not-the-secret"))
    old = await emu.wait_for_delivery(await emu.push_event(emu.team, mention, signed_at=time.time() - 301))

    assert (wrong.status, wrong.failure, old.status, old.failure) == (401, "http_error", 401, "http_error")
    assert not emu.acks


# ------------------------------------------------------------------ payload fidelity


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(("fixture", "build"), [
    ("test_events__valid_event_body.json", lambda e: e.mention(e.team, "U0ALICE01", "C0SUPPORT1", "hi")),
    ("test_message__message_body.json", lambda e: e.dm(e.team, "U0ALICE01", "hi")),
    ("test_events_assistant__user_message_event_body.json",
     lambda e: e.thread_reply(e.team, "U0ALICE01", "C0SUPPORT1", "1.000001", "more")),
    ("test_message_bot__bot_message_event_payload.json", lambda e: e.bot_message(e.team, "C0SUPPORT1", "x")),
    ("test_message_bot__classic_bot_message_event_payload.json",
     lambda e: e.bot_message(e.team, "C0SUPPORT1", "x", classic=True)),
    ("test_message_changed__event_payload.json", lambda e: e.message_changed(e.team, "C0SUPPORT1", "1.1", "y")),
    ("test_message_deleted__event_payload.json", lambda e: e.message_deleted(e.team, "C0SUPPORT1", "1.1")),
])
async def test_event_builders_have_the_real_shape(emu, fixture, build):
    real, built = _fixture(fixture), build(emu)
    ignored = {"user_team", "source_team", "user_profile"}  # Slack Connect extras, not sent for Deskhand's own team

    assert set(real["event"]) - ignored <= set(built)
    if "message" in real["event"]:
        assert set(real["event"]["message"]) <= set(built["message"])
    envelope_id = await emu.push_event(emu.team, build(emu))
    envelope = emu.envelopes[envelope_id]
    assert set(envelope) == {"envelope_id", "payload", "type", "accepts_response_payload",
                             "retry_attempt", "retry_reason"}
    # The fixtures come from an Enterprise Grid install and the older authed_users field.
    assert set(real) - {"enterprise_id", "authed_users"} <= set(envelope["payload"])
    if "authorizations" in real:
        assert set(real["authorizations"][0]) == set(envelope["payload"]["authorizations"][0])


async def test_interactive_builders_have_the_real_shape(emu):
    click = emu.block_action(emu.team, "U0BOB0001", "C0SUPPORT1", "1.1", "approve", "v")
    real_click = _fixture("test_block_actions__body.json")
    command = emu.slash_command(emu.team, "U0BOB0001", "C0SUPPORT1", "status")
    real_command = dict(kv.split("=", 1) for kv in
                        (FIXTURES / "test_slash_command__slash_command_body.txt").read_text().strip().split("&"))

    assert set(real_click) <= set(click) and set(real_click["actions"][0]) == set(click["actions"][0])
    assert click["response_url"].startswith(emu.base_url + "/webhook/")
    assert set(real_command) - {"enterprise_id", "enterprise_name"} <= set(command)
    assert all(isinstance(value, str) for value in command.values())


MODAL = {"type": "modal", "callback_id": "why", "title": {"type": "plain_text", "text": "Why?"},
         "submit": {"type": "plain_text", "text": "Send"}, "private_metadata": "42",
         "blocks": [{"type": "input", "block_id": "b1", "label": {"type": "plain_text", "text": "Reasons"},
                     "element": {"type": "checkboxes", "action_id": "a1", "options": [
                         {"text": {"type": "plain_text", "text": "Slow"}, "value": "slow"},
                         {"text": {"type": "plain_text", "text": "Wrong"}, "value": "wrong"}]}},
                    {"type": "input", "block_id": "b2", "label": {"type": "plain_text", "text": "Comment"},
                     "element": {"type": "plain_text_input", "action_id": "a2"}}]}


async def test_views_open_exchanges_a_click_trigger_once_and_the_submission_has_the_real_shape(emu, client):
    click = emu.block_action(emu.team, "U0ALICE01", "C0SUPPORT1", "1.1", "why", "v")
    opened = await client.views_open(trigger_id=click["trigger_id"], view=MODAL)
    view = opened["view"]
    with pytest.raises(SlackApiError) as again:
        await client.views_open(trigger_id=click["trigger_id"], view=MODAL)
    with pytest.raises(SlackApiError) as unknown:
        await client.views_open(trigger_id="1.2.abc", view=MODAL)
    emu.team.trigger_ttl_s = 0.0  # a trigger is good for 3 s; this one is already too old
    late = emu.block_action(emu.team, "U0ALICE01", "C0SUPPORT1", "1.1", "why", "v")
    with pytest.raises(SlackApiError) as expired:
        await client.views_open(trigger_id=late["trigger_id"], view=MODAL)
    submission = emu.view_submission(emu.team, view["id"], {"a1": ["wrong"], "a2": "too vague"})
    real = _fixture("test_view_submission__body.json")

    assert view["callback_id"] == "why" and view["private_metadata"] == "42" and view["team_id"] == "T0ACME0001"
    assert set(real["view"]) <= set(view) and emu.team.modals[view["id"]]["user"] == "U0ALICE01"
    assert [e.value.response["error"] for e in (again, unknown, expired)] == [
        "exchanged_trigger_id", "invalid_trigger_id", "expired_trigger_id"]
    assert set(real) <= set(submission) and set(real["user"]) == set(submission["user"])
    assert submission["view"]["state"]["values"] == {
        "b1": {"a1": {"type": "checkboxes", "selected_options": [MODAL["blocks"][0]["element"]["options"][1]]}},
        "b2": {"a2": {"type": "plain_text_input", "value": "too vague"}}}
    assert submission["user"]["id"] == "U0ALICE01" and submission["view"]["id"] == view["id"]
