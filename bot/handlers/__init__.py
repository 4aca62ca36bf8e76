"""Slack's inbound side: listeners and middleware that translate payloads and hand them on.

A message becomes a `MessageEnvelope` (events.py) that says what the handler saw; the
orchestrator decides whose it is and accepts it. Clicks, `/deskhand` and modal submissions
become the small types of payloads.py, handed to bot/slack/ (ops, subcommands, home tab),
which the listeners receive through the context. Nothing here imports bot/slack/, queries the
store or posts to Slack.
"""
