"""What `deskhand run` runs: the Slack app, with the mail bridge beside it when mail is on.

    async with open_runtime(settings) as rt, run_deskhand(rt) as running:
        ...  # Slack is connected; mail is received and sent; email threads are mirrored

The order is the one each part's lifespan asks for: the mail bridge outside the Slack app
(its receivers stop after Slack has closed, and the turn queue drains while replies can still
be sent), and one `SlackMailMirror` between them, so that every email conversation is a
thread in the tenant's support channel. This is where the surfaces meet: the orchestrator is
given Slack and email to deliver through (`Surfaces`, bot/surfaces.py), and Slack is given
email's responder as its `TeammateMail` port, so that a teammate's reply in a mirror thread
goes out as email. Neither surface looks the other up.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from bot.ops_http import OpsServer, serve_ops
from bot.schedule import scheduled
from bot.slack.app import SlackCredentials, SlackOptions, SlackSurface, connect, listen
from bot.slack.mail_mirror import SlackMailMirror
from bot.surfaces import Surfaces
from mailbridge.service import MailBridge, MailOptions, mail_lifespan


@dataclass
class Running:
    slack: SlackSurface
    mail: MailBridge | None  # None when the settings turn mail off
    ops: OpsServer | None = None  # /healthz, /readyz, /metrics; None when off or unbound


@asynccontextmanager
async def run_deskhand(runtime, *, credentials: list[SlackCredentials] | None = None,
                       slack_options: SlackOptions | None = None,
                       mail_options: MailOptions | None = None) -> AsyncIterator[Running]:
    mirror = SlackMailMirror(runtime.store, runtime.settings)
    orchestrator = runtime.orchestrator
    async with mail_lifespan(runtime, mirror=mirror, options=mail_options) as bridge:
        email = bridge.responder if bridge is not None else None
        async with connect(runtime, credentials=credentials, options=slack_options, mail=email,
                           mail_mirror=mirror if bridge is not None else None) as slack:
            surfaces = Surfaces(slack=slack.responder, slack_identity=slack.identify, email=email)
            async with orchestrator.delivering_to(surfaces), orchestrator.running(), listen(runtime, slack):
                async with scheduled(runtime, slack=slack), serve_ops(runtime, slack=slack) as ops:
                    yield Running(slack=slack, mail=bridge, ops=ops)
