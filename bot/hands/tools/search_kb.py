"""search_kb: hybrid search over the tenant's knowledge base, with citations."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from bot.contracts import Citation
from bot.hands.context import HandContext
from bot.hands.errors import KBIndexing, KBUnavailable
from bot.hands.registry import hand


KB_RATE_PER_S = 1000.0


class SearchKbArgs(BaseModel):
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(default=3, ge=1, le=3)


class KbHit(BaseModel):
    citation: Citation
    text: str  # the whole chunk, for grounding a model's answer
    passage: str = ""  # the part of it that matched best: what a short answer quotes
    score: float
    relevance: float


class KbResults(BaseModel):
    hits: list[KbHit]


# The KB is local (Chroma and BM25 in this process): no remote quota to protect, so its rate
# limit is far above the default for backends; the brain threads and the CPU bound it.
@hand(side_effect="read", scopes=("kb:read",), cache_ttl_s=30.0, system="kb", rate_per_s=KB_RATE_PER_S)
async def search_kb(ctx: HandContext, args: SearchKbArgs) -> KbResults:
    """Search the help centre and return up to 3 passages with their citations."""
    kb = ctx.kb
    if kb is None:
        raise KBUnavailable("no knowledge base is configured")
    if not await asyncio.to_thread(kb.is_available, ctx.tenant_id):
        if getattr(kb, "is_indexing", None) is not None and kb.is_indexing(ctx.tenant_id):
            raise KBIndexing("the knowledge base is being built")
        raise KBUnavailable("the knowledge base is empty or stale")
    hits = await asyncio.to_thread(kb.search, ctx.tenant_id, args.query, ctx.channel, args.top_k)
    return KbResults(hits=[
        KbHit(citation=h.citation, text=h.text, passage=h.passage, score=h.score, relevance=h.relevance)
        for h in hits
    ])


SPEC = search_kb
