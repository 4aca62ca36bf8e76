"""Slack's outward side: the Socket Mode app's lifespan, the responder and its outbox, Block
Kit, what buttons and `/deskhand` do, the Home tab, approvers, and the mirror of email threads.

Entry points: `bot.slack.app.serve(runtime)` (Slack alone) and `connect` / `listen`, which
bot/run.py wires around the orchestrator. The inbound side, payload to envelope, is
bot/handlers/; this side may import it, never the other way round.
"""
