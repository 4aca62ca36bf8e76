"""Slack's side of Deskhand's tests, without the transport: workspaces and payloads.

- ``Workspace``: one Slack team (IDs, tokens, users, user groups, channels, message history)
  and what each emulated Web API method does to it. ``slack_emulator.py`` routes HTTP calls here.
- ``PayloadBuilders``: the events and interactions people cause, mixed into ``SlackEmulator``.

Every payload mirrors a real one kept in ``tests/fixtures_slack/`` (see the index there): the
same keys and value types, with IDs and text filled in from a ``Workspace``.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

MAX_TEXT = 40_000  # chat.postMessage truncates longer text and warns
_ALNUM = string.ascii_uppercase + string.digits


class SlackApiFailure(Exception):
    """Raised by a Web API method to answer ``{"ok": false, "error": args[0]}``."""


def slack_id(prefix: str, length: int = 10) -> str:
    """A random Slack-looking ID such as ``Ev0A1B2C3D4E``."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def channel_type(channel_id: str) -> str:
    return {"D": "im", "G": "group"}.get(channel_id[:1], "channel")


def rich_text(text: str) -> list[dict[str, Any]]:
    """The ``blocks`` Slack adds to a message a person typed."""
    return [{"type": "rich_text", "block_id": slack_id("", 5),
             "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}]}]


def flag(value: Any) -> bool:
    """A boolean as the SDK sends it: ``True`` in JSON, ``"1"``/``"true"`` in forms and queries."""
    return str(value).lower() in ("1", "true")


def json_field(value: Any) -> Any:
    """Blocks and views arrive as JSON text in form bodies, as lists/dicts in JSON bodies."""
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "channel"}


@dataclass
class Workspace:
    """One Slack team with Deskhand installed."""

    team_id: str
    name: str = ""
    domain: str = ""
    app_id: str = ""
    bot_user_id: str = ""
    bot_id: str = ""
    bot_token: str = ""
    app_token: str = ""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # channel -> messages
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    home_views: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> published view
    modals: dict[str, dict[str, Any]] = field(default_factory=dict)  # view id -> modal opened (views.open)
    # trigger_id -> (user, time issued): each works once, within `trigger_ttl_s` (Slack: 3 s)
    triggers: dict[str, tuple[str, float]] = field(default_factory=dict)
    trigger_ttl_s: float = 3.0
    scopes: str = ""  # the bot scopes auth.test reports (x-oauth-scopes); empty: the emulator's default
    signing_secret: str = ""  # the app's Signing Secret; HTTP deliveries are signed with it
    # HTTP mode (``SlackEmulator.use_request_url``): where the app's configuration sends events,
    # clicks and slash commands. Empty: Socket Mode.
    event_url: str = ""
    interactivity_url: str = ""
    command_url: str = ""
    _clock: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        tail = self.team_id[1:]
        self.name = self.name or f"Team {tail}"
        self.domain = self.domain or f"team-{tail.lower()}"
        self.app_id = self.app_id or f"A{tail}"
        self.bot_user_id = self.bot_user_id or f"U{tail}BOT"
        self.bot_id = self.bot_id or f"B{tail}"
        self.bot_token = self.bot_token or f"xoxb-{tail}-{secrets.token_hex(6)}"
        self.app_token = self.app_token or f"xapp-1-{self.app_id}-{secrets.token_hex(6)}"
        self.signing_secret = self.signing_secret or secrets.token_hex(16)  # 32 hex digits, like Slack's
        bot = self.add_user(self.bot_user_id, "deskhand", real_name="Deskhand")
        bot["is_bot"] = True
        bot["profile"].update(bot_id=self.bot_id, api_app_id=self.app_id)

    # ------------------------------------------------------------ data
    def add_user(self, user_id: str, name: str, *, email: str | None = None,
                 real_name: str | None = None, is_admin: bool = False) -> dict[str, Any]:
        real_name = real_name or name.replace(".", " ").title()
        self.users[user_id] = {
            "id": user_id, "team_id": self.team_id, "name": name, "deleted": False,
            "real_name": real_name, "tz": "Europe/London", "is_admin": is_admin,
            "is_owner": False, "is_bot": False, "is_app_user": False,
            "profile": {"real_name": real_name, "display_name": name,
                        "email": email or f"{name}@{self.domain}.example", "team": self.team_id}}
        return self.users[user_id]

    def add_channel(self, channel_id: str, name: str, members: Iterable[str] = (),
                    *, bot_member: bool = True) -> dict[str, Any]:
        members = [*members, *([self.bot_user_id] if bot_member else [])]
        self.channels[channel_id] = {"id": channel_id, "name": name, "is_im": False,
                                     "is_private": channel_id.startswith("G"),
                                     "members": list(dict.fromkeys(members))}
        self.history.setdefault(channel_id, [])
        return self.channels[channel_id]

    def add_usergroup(self, usergroup_id: str, users: Iterable[str]) -> None:
        self.usergroups[usergroup_id] = list(users)

    def ensure_user(self, user_id: str) -> dict[str, Any]:
        return self.users.get(user_id) or self.add_user(user_id, f"user.{user_id.lower()}")

    def ensure_channel(self, channel_id: str, member: str | None = None) -> dict[str, Any]:
        channel = self.channels.get(channel_id) or self.add_channel(channel_id, channel_id.lower())
        if member and member not in channel["members"]:
            channel["members"].append(member)
        return channel

    def im_channel(self, user_id: str) -> str:
        """The DM channel between ``user_id`` and the bot, opened on first use."""
        self.ensure_user(user_id)
        channel_id = "D" + user_id[1:]
        if channel_id not in self.channels:
            self.channels[channel_id] = {"id": channel_id, "is_im": True, "is_private": True,
                                         "user": user_id, "members": [user_id, self.bot_user_id]}
            self.history.setdefault(channel_id, [])
        return channel_id

    def find_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.history.get(channel, []) if m["ts"] == ts), None)

    def next_ts(self, channel: str) -> str:
        """A message timestamp, strictly increasing within ``channel``."""
        us = max(time.time_ns() // 1000, self._clock.get(channel, 0) + 1)
        self._clock[channel] = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def apply_event(self, event: dict[str, Any]) -> None:
        """Keep the history in step with the messages, edits and deletions people make."""
        channel, subtype = event.get("channel"), event.get("subtype")
        if event.get("type") not in ("message", "app_mention") or not channel:
            return
        history = self.history.setdefault(channel, [])
        if subtype == "message_changed":
            original = self.find_message(channel, event["message"]["ts"])
            if original is not None:
                original.update(event["message"])
        elif subtype == "message_deleted":
            history[:] = [m for m in history if m["ts"] != event["deleted_ts"]]
        elif self.find_message(channel, event["ts"]) is None:
            kept = {k: v for k, v in event.items() if k not in ("event_ts", "channel_type")}
            history.append({**kept, "type": "message"})
            history.sort(key=lambda m: float(m["ts"]))

    # ------------------------------------------------------------ Web API methods
    def _channel(self, channel_id: str | None) -> dict[str, Any]:
        if channel_id in self.users:  # posting to a user ID goes to the DM with them
            channel_id = self.im_channel(channel_id)
        if channel_id not in self.channels:
            raise SlackApiFailure("channel_not_found")
        return self.channels[channel_id]

    def _own_message(self, params: dict, verb: str) -> tuple[str, dict[str, Any]]:
        channel = self._channel(params.get("channel"))["id"]
        message = self.find_message(channel, params.get("ts") or "")
        if message is None:
            raise SlackApiFailure("message_not_found")
        if message.get("user") != self.bot_user_id:
            raise SlackApiFailure(f"cant_{verb}_message")
        return channel, message

    def api_auth_test(self, params: dict) -> dict:
        return {"url": f"https://{self.domain}.slack.com/", "team": self.name, "user": "deskhand",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def api_chat_postMessage(self, params: dict) -> dict:
        channel = self._channel(params.get("channel"))
        if self.bot_user_id not in channel["members"]:
            raise SlackApiFailure("not_in_channel")
        text, blocks = params.get("text") or "", json_field(params.get("blocks"))
        if not text and not blocks and not params.get("attachments"):
            raise SlackApiFailure("no_text")
        warnings = ["message_truncated"] if len(text) > MAX_TEXT else []
        ts = self.next_ts(channel["id"])
        message = {"user": self.bot_user_id, "type": "message", "ts": ts, "bot_id": self.bot_id,
                   "app_id": self.app_id, "text": text[:MAX_TEXT], "team": self.team_id}
        if blocks:
            message["blocks"] = blocks
        if params.get("metadata"):
            message["metadata"] = json_field(params["metadata"])
        if thread_ts := params.get("thread_ts"):
            message["thread_ts"] = thread_ts
            if flag(params.get("reply_broadcast")):
                message["subtype"] = "thread_broadcast"
            parent = self.find_message(channel["id"], thread_ts)
            if parent is not None:  # Slack accepts an unknown thread_ts; the reply is then orphaned
                parent.update(thread_ts=thread_ts, reply_count=parent.get("reply_count", 0) + 1)
        self.history[channel["id"]].append({**message, "channel": channel["id"]})
        reply = {"channel": channel["id"], "ts": ts, "message": message}
        return {**reply, "response_metadata": {"warnings": warnings}} if warnings else reply

    def api_chat_update(self, params: dict) -> dict:
        channel, message = self._own_message(params, "update")
        if "text" in params:
            message["text"] = params["text"][:MAX_TEXT]
        if "blocks" in params:
            message["blocks"] = json_field(params["blocks"])
        message["edited"] = {"user": self.bot_user_id, "ts": self.next_ts(channel)}
        return {"channel": channel, "ts": message["ts"], "text": message["text"], "message": _public(message)}

    def api_chat_delete(self, params: dict) -> dict:
        channel, message = self._own_message(params, "delete")
        self.history[channel].remove(message)
        return {"channel": channel, "ts": message["ts"]}

    def api_chat_postEphemeral(self, params: dict) -> dict:
        channel = self._channel(params.get("channel"))
        if params.get("user") not in channel["members"]:
            raise SlackApiFailure("user_not_in_channel")
        ts = self.next_ts(channel["id"])
        self.ephemerals.append({"channel": channel["id"], "user": params["user"], "message_ts": ts,
                                "text": params.get("text", ""), "blocks": json_field(params.get("blocks")),
                                "thread_ts": params.get("thread_ts")})
        return {"message_ts": ts}

    def api_reactions_add(self, params: dict) -> dict:
        message = self.find_message(self._channel(params.get("channel"))["id"], params.get("timestamp") or "")
        if message is None:
            raise SlackApiFailure("message_not_found")
        reactions = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == params.get("name")), None)
        if reaction is None:
            reaction = {"name": params.get("name"), "users": [], "count": 0}
            reactions.append(reaction)
        if self.bot_user_id in reaction["users"]:
            raise SlackApiFailure("already_reacted")
        reaction["users"].append(self.bot_user_id)
        reaction["count"] += 1
        return {}

    def api_conversations_replies(self, params: dict) -> dict:
        channel, ts = self._channel(params.get("channel"))["id"], params.get("ts") or ""
        if self.find_message(channel, ts) is None:
            raise SlackApiFailure("thread_not_found")
        thread = [_public(m) for m in self.history[channel] if ts in (m["ts"], m.get("thread_ts"))]
        return {"messages": thread, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def api_conversations_info(self, params: dict) -> dict:
        """The channel object (conversations.info), with ``is_member`` for the calling bot."""
        channel = self._channel(params.get("channel"))
        is_im = channel.get("is_im", False)
        info = {"id": channel["id"], "created": 1700000000, "is_archived": False, "is_im": is_im,
                "is_mpim": False, "is_private": channel["is_private"],
                "is_channel": not is_im and not channel["is_private"],
                "is_group": not is_im and channel["is_private"]}
        if is_im:
            info["user"] = channel["user"]
        else:
            info.update(name=channel["name"], is_member=self.bot_user_id in channel["members"],
                        is_general=False, num_members=len(channel["members"]))
        return {"channel": info}

    def api_conversations_members(self, params: dict) -> dict:
        members = self._channel(params.get("channel"))["members"]
        cursor = params.get("cursor") or ""
        start = int(base64.b64decode(cursor).decode().split(":")[1]) if cursor else 0
        end = start + int(params.get("limit") or 100)
        next_cursor = base64.b64encode(f"offset:{end}".encode()).decode() if end < len(members) else ""
        return {"members": members[start:end], "response_metadata": {"next_cursor": next_cursor}}

    def api_users_info(self, params: dict) -> dict:
        if params.get("user") not in self.users:
            raise SlackApiFailure("user_not_found")
        return {"user": self.users[params["user"]]}

    def api_usergroups_users_list(self, params: dict) -> dict:
        if params.get("usergroup") not in self.usergroups:
            raise SlackApiFailure("no_such_subteam")
        return {"users": self.usergroups[params["usergroup"]]}

    def api_views_publish(self, params: dict) -> dict:
        user, view = params.get("user_id"), json_field(params.get("view"))
        if user not in self.users:
            raise SlackApiFailure("user_not_found")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackApiFailure("invalid_arguments")
        self.home_views[user] = {"id": slack_id("V"), "team_id": self.team_id, "app_id": self.app_id,
                                 "bot_id": self.bot_id, "hash": secrets.token_hex(8), **view}
        return {"view": self.home_views[user]}

    def issue_trigger(self, user: str) -> str:
        """A trigger_id for an interaction by ``user``, as Slack puts in block_actions and commands."""
        trigger = trigger_id()
        self.triggers[trigger] = (user, time.monotonic())
        return trigger

    def api_views_open(self, params: dict) -> dict:
        """Open a modal for the user whose interaction issued ``trigger_id``: a trigger works
        once (``exchanged_trigger_id``) and for 3 s (``expired_trigger_id``)."""
        trigger, view = params.get("trigger_id") or "", json_field(params.get("view"))
        if trigger not in self.triggers:
            raise SlackApiFailure("invalid_trigger_id")
        user, issued = self.triggers[trigger]
        if issued < 0:
            raise SlackApiFailure("exchanged_trigger_id")
        if time.monotonic() - issued > self.trigger_ttl_s:
            raise SlackApiFailure("expired_trigger_id")
        if not isinstance(view, dict) or view.get("type") != "modal" or not view.get("title"):
            raise SlackApiFailure("invalid_arguments")
        self.triggers[trigger] = (user, -1.0)
        view_id = slack_id("V")
        opened = {"id": view_id, "team_id": self.team_id, "type": "modal", "blocks": view.get("blocks", []),
                  "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
                  "state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
                  "title": view["title"], "clear_on_close": flag(view.get("clear_on_close")),
                  "notify_on_close": flag(view.get("notify_on_close")), "close": view.get("close"),
                  "submit": view.get("submit"), "previous_view_id": None, "root_view_id": view_id,
                  "app_id": self.app_id, "external_id": view.get("external_id", ""),
                  "app_installed_team_id": self.team_id, "bot_id": self.bot_id}
        self.modals[view_id] = {"user": user, "view": opened}
        return {"view": opened}

    def apply_response_url(self, channel: str | None, message_ts: str | None, body: dict) -> None:
        """What a POST to a message's ``response_url`` does to that message."""
        original = self.find_message(channel, message_ts) if channel and message_ts else None
        if original is not None and flag(body.get("delete_original")):
            self.history[channel].remove(original)
        elif original is not None and flag(body.get("replace_original")):
            original.update(text=body.get("text", ""), blocks=body.get("blocks", []))


def event_callback(ws: Workspace, event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The Events API wrapper around an event (``test_message_bot__bot_message_event_payload.json``)."""
    ts = event.get("event_ts") or event.get("ts") or f"{time.time():.6f}"
    return {"token": "verification_token", "team_id": ws.team_id, "api_app_id": ws.app_id,
            "event": event, "type": "event_callback", "event_id": event_id,
            "event_time": int(float(ts)),
            "authorizations": [{"enterprise_id": None, "team_id": ws.team_id, "user_id": ws.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
            "event_context": f"1-{event['type']}-{ws.team_id}-{event.get('channel', '')}"}


def _previous(ws: Workspace, channel: str, ts: str) -> dict[str, Any]:
    """The message as it was, or a stand-in when the test never stored it."""
    return _public(ws.find_message(channel, ts) or {"type": "message", "text": "", "user": "",
                                                    "team": ws.team_id, "ts": ts, "blocks": rich_text("")})


class PayloadBuilders:
    """Builders for the events and interactions people cause; mixed into ``SlackEmulator``.

    Each returns a dict for ``push_event`` / ``push_interactive`` / ``push_slash_command``.
    Building changes nothing except registering the users and channels it names (Slack only
    sends events about real ones); pushing an event is what adds its message to the history.
    """

    def workspace(self, team: str | Workspace) -> Workspace:
        raise NotImplementedError

    def response_url(self, team: str, channel: str | None = None, message_ts: str | None = None) -> str:
        raise NotImplementedError

    def dm(self, team: str | Workspace, user: str, text: str, *, thread_ts: str | None = None) -> dict:
        """A direct message from ``user`` to the bot (``message.im``; ``channel_type`` is ``im``)."""
        ws = self.workspace(team)
        return self._user_message(ws, user, ws.im_channel(user), text, thread_ts)

    def mention(self, team: str | Workspace, user: str, channel: str, text: str,
                thread_ts: str | None = None) -> dict:
        """An ``app_mention`` (``test_events__valid_event_body.json``); ``<@bot>`` is put in
        front of ``text`` unless it is already there."""
        ws = self.workspace(team)
        tag = f"<@{ws.bot_user_id}>"
        text = text if tag in text else f"{tag} {text}"
        return self._user_message(ws, user, channel, text, thread_ts, event_type="app_mention")

    def thread_reply(self, team: str | Workspace, user: str, channel: str, thread_ts: str,
                     text: str) -> dict:
        """A plain message in a thread, e.g. a follow-up where the bot already answered."""
        return self._user_message(self.workspace(team), user, channel, text, thread_ts)

    def _user_message(self, ws: Workspace, user: str, channel: str, text: str, thread_ts: str | None,
                      event_type: str = "message") -> dict:
        """A message a person typed (``test_message__message_body.json``, threaded as in
        ``test_events_assistant__user_message_event_body.json``)."""
        ws.ensure_user(user)
        ws.ensure_channel(channel, member=user)
        ts = ws.next_ts(channel)
        event = {"client_msg_id": str(uuid.uuid4()), "type": event_type, "text": text, "user": user,
                 "ts": ts, "team": ws.team_id, "blocks": rich_text(text), "channel": channel,
                 "event_ts": ts}
        if event_type == "message":
            event["channel_type"] = channel_type(channel)
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = (ws.find_message(channel, thread_ts) or {}).get("user", user)
        return event

    def bot_message(self, team: str | Workspace, channel: str, text: str, *, bot_id: str | None = None,
                    own: bool = False, classic: bool = False, thread_ts: str | None = None) -> dict:
        """A message from an app: ``bot_id`` + ``bot_profile`` and no subtype, as modern apps post
        (``test_message_bot__bot_message_event_payload.json``); ``classic`` gives the old subtype
        ``bot_message``; ``own`` makes it Deskhand's own post."""
        ws = self.workspace(team)
        ws.ensure_channel(channel)
        ts, bot_id = ws.next_ts(channel), ws.bot_id if own else bot_id or "B0OTHERAPP"
        if classic:
            event = {"type": "message", "subtype": "bot_message", "text": text, "ts": ts,
                     "username": "other-app", "bot_id": bot_id}
        else:
            event = {"bot_id": bot_id, "type": "message", "text": text,
                     "user": ws.bot_user_id if own else "U0OTHERBOT", "ts": ts, "team": ws.team_id,
                     "bot_profile": {"id": bot_id, "deleted": False, "name": "deskhand" if own else "other-app",
                                     "updated": int(time.time()), "app_id": ws.app_id if own else "A0OTHERAPP",
                                     "icons": {"image_36": "https://a.slack-edge.com/80588/img/plugins/app/bot_36.png"},
                                     "team_id": ws.team_id}}
        if thread_ts:
            event["thread_ts"] = thread_ts
        event.update(channel=channel, event_ts=ts, channel_type=channel_type(channel))
        return event

    def message_changed(self, team: str | Workspace, channel: str, ts: str, new_text: str) -> dict:
        """An edit of the message at ``ts`` (``test_message_changed__event_payload.json``)."""
        ws = self.workspace(team)
        previous, event_ts = _previous(ws, channel, ts), ws.next_ts(channel)
        message = {**previous, "text": new_text, "blocks": rich_text(new_text),
                   "edited": {"user": previous.get("user", ""), "ts": event_ts}}
        return {"type": "message", "subtype": "message_changed", "message": message,
                "previous_message": previous, "channel": channel, "hidden": True, "ts": event_ts,
                "event_ts": event_ts, "channel_type": channel_type(channel)}

    def message_deleted(self, team: str | Workspace, channel: str, ts: str) -> dict:
        """A deletion of the message at ``ts`` (``test_message_deleted__event_payload.json``)."""
        ws = self.workspace(team)
        event_ts = ws.next_ts(channel)
        return {"type": "message", "subtype": "message_deleted", "previous_message": _previous(ws, channel, ts),
                "channel": channel, "hidden": True, "deleted_ts": ts, "event_ts": event_ts,
                "ts": event_ts, "channel_type": channel_type(channel)}

    def block_action(self, team: str | Workspace, user: str, channel: str, message_ts: str,
                     action_id: str, value: str, *, block_id: str | None = None,
                     text: str = "Button") -> dict:
        """A button click on the message at ``message_ts`` (``test_block_actions__body.json``,
        plus the ``message`` Slack attaches); ``response_url`` points at the emulator."""
        ws = self.workspace(team)
        person = ws.ensure_user(user)
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": person["name"], "name": person["name"], "team_id": ws.team_id},
            "api_app_id": ws.app_id, "token": "verification_token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": False},
            "trigger_id": ws.issue_trigger(user),
            "team": {"id": ws.team_id, "domain": ws.domain},
            "enterprise": None, "is_enterprise_install": False,
            "channel": {"id": channel, "name": ws.ensure_channel(channel).get("name", "directmessage")},
            "state": {"values": {}},
            "response_url": self.response_url(ws.team_id, channel, message_ts),
            "actions": [{"action_id": action_id, "block_id": block_id or slack_id("", 5),
                         "text": {"type": "plain_text", "text": text, "emoji": True}, "value": value,
                         "type": "button", "action_ts": f"{time.time():.6f}"}],
        }
        message = ws.find_message(channel, message_ts)
        if message is not None:
            payload["message"] = _public(message)
        return payload

    def slash_command(self, team: str | Workspace, user: str, channel: str, text: str,
                      command: str = "/deskhand") -> dict:
        """A slash command; every value is a string (``test_slash_command__slash_command_body.txt``)."""
        ws = self.workspace(team)
        return {"token": "verification_token", "team_id": ws.team_id, "team_domain": ws.domain,
                "channel_id": channel, "channel_name": ws.ensure_channel(channel).get("name", "directmessage"),
                "user_id": user, "user_name": ws.ensure_user(user)["name"], "command": command,
                "text": text, "api_app_id": ws.app_id, "is_enterprise_install": "false",
                "response_url": self.response_url(ws.team_id), "trigger_id": ws.issue_trigger(user)}

    def view_submission(self, team: str | Workspace, view_id: str, answers: dict[str, Any]) -> dict:
        """The user's submission of a modal opened with views.open (``test_view_submission__body.json``).
        ``answers`` maps an input's ``action_id`` to what the user gave: text for a text input,
        a list of option values for checkboxes; the state carries the view's own option objects."""
        ws = self.workspace(team)
        opened = ws.modals[view_id]
        user, view = opened["user"], opened["view"]
        person = ws.ensure_user(user)
        return {"type": "view_submission",
                "team": {"id": ws.team_id, "domain": ws.domain},
                "user": {"id": user, "username": person["name"], "name": person["name"], "team_id": ws.team_id},
                "api_app_id": ws.app_id, "token": "verification_token", "trigger_id": ws.issue_trigger(user),
                "view": {**view, "state": {"values": modal_state(view, answers)}}, "response_urls": []}


def modal_state(view: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
    """``view.state.values`` as Slack fills it: every input block, by block_id and action_id."""
    values: dict[str, Any] = {}
    for block in view.get("blocks", []):
        element = block.get("element") or {}
        if block.get("type") != "input" or "action_id" not in element:
            continue
        answer, kind = answers.get(element["action_id"]), element.get("type")
        if kind == "checkboxes":
            state = {"type": kind, "selected_options": [o for o in element.get("options", [])
                                                        if o.get("value") in (answer or [])]}
        else:
            state = {"type": kind, "value": answer}
        values[block.get("block_id", "")] = {element["action_id"]: state}
    return values
