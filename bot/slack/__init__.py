"""Deskhand's Slack surface: Socket Mode app, Block Kit, responder, approvals and handoff.

Entry point: `bot.slack.app.serve(runtime)`; the listeners live in `bot/handlers/`.
"""
