"""Deskhand's knowledge base: load help articles, chunk, embed locally, search hybrid.

    kb = KnowledgeBase.from_settings(settings)
    kb.reload("T_DEMO")                      # incremental, by content hash
    hits = kb.search("T_DEMO", "how long do refunds take?", channel="slack_dm")
"""

import bot  # noqa: F401  (first: it pins BLAS to one thread before numpy loads)
from kb_loader.encoder import Encoder, EncoderError, get_encoder
from kb_loader.kb import KnowledgeBase, Progress, ReloadError
from kb_loader.models import KBError, KBHit, KBStatus, ReloadReport
from kb_loader.scheduler import schedule_reloads

__all__ = [
    "Encoder", "EncoderError", "KBError", "KBHit", "KBStatus", "KnowledgeBase", "Progress",
    "ReloadError", "ReloadReport", "get_encoder", "schedule_reloads",
]
