"""The knowledge base's result types: what `KnowledgeBase` returns to the bot and the CLI."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from bot.contracts import Citation


class KBHit(BaseModel):
    """One retrieved chunk.

    - `citation`: what an answer shows (doc_id, title, url, section, and a snippet that is a
      verbatim excerpt of `text`).
    - `text`: the whole chunk (512–800 tokens), for grounding the answer.
    - `passage`: the part of `text` that matched best (one section, at most ~200 tokens): what
      a short answer should quote.
    - `score`: the fused hybrid score that ordered the results (higher is better; only
      comparable within one search).
    - `relevance`: cosine similarity of the query and chunk vectors, clipped to 0..1. It is
      comparable across searches, which is what `settings.kb_relevance_floor` needs: with
      all-MiniLM-L6-v2, on-topic chunks usually score 0.35–0.75 and unrelated ones below
      0.25. Other encoders have other ranges, so set the floor per encoder.
    """

    citation: Citation
    score: float
    relevance: float = Field(ge=0.0, le=1.0)
    text: str
    passage: str = ""
    chunk_id: str = ""


class KBError(BaseModel):
    source: str
    error: str


class ReloadReport(BaseModel):
    tenant_id: str
    kb_dir: str
    added: list[str] = Field(default_factory=list, description="doc_ids new to the index")
    updated: list[str] = Field(default_factory=list, description="doc_ids whose chunks changed")
    unchanged: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list, description="doc_ids deleted from both indexes")
    kept: list[str] = Field(
        default_factory=list, description="doc_ids kept as they were because their file failed to load"
    )
    docs: int = 0
    chunks: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = Field(0, description="new chunk ids whose vector was reused, not re-embedded")
    chunks_deleted: int = 0
    errors: list[KBError] = Field(default_factory=list)
    encoder: str = ""
    seconds: float = 0.0


class KBStatus(BaseModel):
    tenant_id: str
    available: bool
    reason: str = Field("", description="why not available: never_loaded, empty or stale")
    last_reload_at: datetime | None = None
    age_hours: float | None = None
    stale_after_hours: float
    docs: int = 0
    chunks: int = 0
    errors: list[KBError] = Field(default_factory=list)
    encoder: str = ""
    kb_dir: str = ""
