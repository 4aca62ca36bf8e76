"""A scripted OpenAI-compatible server on 127.0.0.1, for tests of the LLM planner.

The real `openai` client and `instructor` talk to it over real HTTP. It answers
`POST /v1/chat/completions` from a script and records every request body:

    async with OpenAIServer([plan_reply({...}), error_reply(503)]) as server:
        settings = load_settings(home=tmp_path, openai_base_url=server.base_url, ...)
        ...
        assert server.requests[0]["model"] == "small"

A script is a list of replies, used in order, or a callable `(body, index) -> reply`.
A list entry may itself be such a callable. A reply is a dict built by the helpers below:

- `plan_reply(obj)`: the object as JSON, shaped the way the request asks for it — a tool
  call to the forced function when the request forces one (instructor's TOOLS mode), the
  message content otherwise (JSON mode);
- `tool_call_reply(name, arguments)`: a tool call with these exact arguments (any string,
  so invalid JSON too);
- `text_reply(content)`: a plain assistant message;
- `error_reply(status)`: an HTTP error with an OpenAI-style error body;
- `raw_reply(body)`: a 200 whose body is this exact text (invalid JSON, say).

Any reply may carry `delay` (seconds to wait before answering: a slow model) and `usage`
(`(prompt_tokens, completion_tokens)`). A request past the end of a list script gets a 500
and is recorded in `unscripted`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

Reply = dict[str, Any]
Script = list[Reply | Callable[[dict, int], Reply]] | Callable[[dict, int], Reply]


def plan_reply(obj: Any, **extra: Any) -> Reply:
    return {"kind": "json", "obj": obj, **extra}


def tool_call_reply(name: str | None, arguments: str, **extra: Any) -> Reply:
    """`name=None` uses the function the request forces."""
    return {"kind": "tool_call", "name": name, "arguments": arguments, **extra}


def text_reply(content: str, **extra: Any) -> Reply:
    return {"kind": "text", "content": content, **extra}


def error_reply(status: int = 500, message: str = "the model server failed", **extra: Any) -> Reply:
    return {"kind": "error", "status": status, "message": message, **extra}


def raw_reply(body: str, **extra: Any) -> Reply:
    return {"kind": "raw", "body": body, **extra}


def forced_function(body: dict) -> str | None:
    """The function name a request forces with `tool_choice`, if any."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name")
    tools = body.get("tools") or []
    if choice in ("required", "auto") and len(tools) == 1:
        return tools[0]["function"]["name"]
    return None


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class OpenAIServer:
    def __init__(self, script: Script | None = None, *, host: str = "127.0.0.1"):
        self.script: Script = script if script is not None else []
        self.host = host
        self.port = 0
        self.requests: list[dict] = []
        self.raw_requests: list[bytes] = []
        self.unscripted: list[dict] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def set_script(self, script: Script) -> None:
        self.script = script
        self.requests.clear()
        self.raw_requests.clear()
        self.unscripted.clear()

    def bodies_text(self) -> str:
        """Every request body received, as one string (for "never sent" assertions)."""
        return "\n".join(raw.decode("utf-8", "replace") for raw in self.raw_requests)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> OpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = getattr(site, "_server", None)
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._closing.set()  # releases any reply still waiting out its delay
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handlers ------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "scripted", "object": "model", "created": 0, "owned_by": "deskhand-tests"}]})

    def _next_reply(self, body: dict, index: int) -> Reply | None:
        script = self.script
        if callable(script):
            return script(body, index)
        if index >= len(script):
            return None
        entry = script[index]
        return entry(body, index) if callable(entry) else entry

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.raw_requests.append(raw)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "request body is not JSON"}}, status=400)
        index = len(self.requests)
        self.requests.append(body)
        reply = self._next_reply(body, index)
        if reply is None:
            self.unscripted.append(body)
            return web.json_response({"error": {"message": "no scripted reply left", "type": "server_error"}},
                                     status=500)
        delay = float(reply.get("delay", 0.0))
        if delay > 0:
            try:
                await asyncio.wait_for(self._closing.wait(), delay)
            except TimeoutError:
                pass
        return self._render(body, reply)

    def _render(self, body: dict, reply: Reply) -> web.Response:
        kind = reply["kind"]
        if kind == "error":
            return web.json_response(
                {"error": {"message": reply["message"], "type": "server_error", "code": reply["status"]}},
                status=reply["status"])
        if kind == "raw":
            return web.Response(text=reply["body"], content_type="application/json")

        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        if kind == "json":
            payload = json.dumps(reply["obj"])
            name = forced_function(body)
            if name:
                message["tool_calls"] = [self._tool_call(name, payload)]
                finish = "tool_calls"
            else:
                message["content"] = payload
        elif kind == "tool_call":
            payload = reply["arguments"]
            name = reply["name"] or forced_function(body) or "unknown"
            message["tool_calls"] = [self._tool_call(name, payload)]
            finish = "tool_calls"
        elif kind == "text":
            payload = reply["content"]
            message["content"] = payload
        else:
            raise ValueError(f"unknown reply kind {kind!r}")

        prompt, completion = reply.get("usage") or (
            _estimate_tokens(json.dumps(body.get("messages", []))), _estimate_tokens(payload))
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })

    @staticmethod
    def _tool_call(name: str, arguments: str) -> dict:
        return {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                "function": {"name": name, "arguments": arguments}}
