"""The App Home listener: when someone opens Deskhand's Home tab, publish their workspace's
view (`HomeTab`, bot/slack/home_tab.py) as a job."""

from __future__ import annotations

from slack_bolt.app.async_app import AsyncApp


async def on_home_opened(event, context, home, jobs):
    if event.get("tab", "home") == "home":
        jobs.spawn(home.publish(context.team_id, event["user"]), name="slack-home")


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)
