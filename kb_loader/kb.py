"""`KnowledgeBase`: the one object the bot, the CLI and the scheduler use.

Its methods are synchronous (the bot calls them through `asyncio.to_thread`). Searches may run
concurrently, each encoding its query on its own thread; reloads run one at a time in a process,
embed through `BulkEmbedder` on every core (kb_loader/bulk.py), and each records its start,
end and error (kb_loader/runs.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import chromadb
import numpy as np
import structlog

from bot.contracts import Channel
from kb_loader import retrieval
from kb_loader.bulk import BulkEmbedder, usable_cores
from kb_loader.chunker import Chunk, chunk_document
from kb_loader.encoder import Encoder, get_encoder
from kb_loader.freshness import FreshnessRecord, read_record, write_record
from kb_loader.index import PUBLIC, TenantIndex, collection_name, embed_hash, open_chroma
from kb_loader.loaders import load_folder
from kb_loader.models import KBError, KBHit, KBStatus, ReloadReport
from kb_loader.runs import run_finished, run_started

if TYPE_CHECKING:
    from bot.config import Settings

log = structlog.get_logger("kb_loader")

#: progress(stage, done, total); stages are "load", "chunk", "embed" (counted in passages)
#: and "index".
Progress = Callable[[str, int, int], None]
CHANNELS = frozenset(c.value for c in Channel)


class ReloadError(RuntimeError):
    """The reload could not run at all (e.g. the folder is missing); the index is untouched."""


def _channel(channel: Channel | str | None) -> str | None:
    """A Deskhand channel name, None (no filter), or PUBLIC for any other value: a caller
    from an unknown surface sees only what every channel may see, never more."""
    if channel is None:
        return None
    value = channel.value if isinstance(channel, Channel) else str(channel)
    if value not in CHANNELS:
        log.warning("kb.unknown_channel", channel=value)
        return PUBLIC
    return value


class KnowledgeBase:
    def __init__(self, settings: Settings, *, encoder: Encoder | None = None,
                 client: chromadb.ClientAPI | None = None, bulk_workers: int | None = None):
        """`bulk_workers`: threads a reload embeds on (None: one per core, divided by the BLAS
        threads each one uses; 1: on the calling thread)."""
        self.settings = settings
        self.bulk_workers = bulk_workers if bulk_workers is not None else self._default_bulk_workers(settings)
        self.home = Path(settings.home)
        self._encoder = encoder
        self._client = client
        self._owns_client = client is None  # one passed in is the caller's to close
        self._indexes: dict[str, TenantIndex] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._queued: set[str] = set()  # tenants whose build is waiting or running

    @classmethod
    def from_settings(cls, settings: Settings) -> KnowledgeBase:
        return cls(settings)

    @staticmethod
    def _default_bulk_workers(settings: Settings) -> int:
        blas = int(settings.kb_blas_threads)
        # 0 leaves numpy's BLAS its own thread count (every core): it parallelises itself.
        return 1 if blas <= 0 else max(1, usable_cores() // blas)

    # --- resources ----------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = get_encoder(self.settings)
        return self._encoder

    @property
    def client(self) -> chromadb.ClientAPI:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = open_chroma(self.home / "chroma")
        return self._client

    def close(self) -> None:
        """Release the Chroma store (its SQLite file and vector segments). Used again after
        this, the knowledge base opens it again."""
        with self._lock:
            client, self._client = self._client, None
            self._indexes.clear()
        if client is not None and self._owns_client:
            client.close()

    def index(self, tenant_id: str) -> TenantIndex:
        with self._lock:
            idx = self._indexes.get(tenant_id)
        if idx is None:
            enc = self.encoder
            idx = TenantIndex(self.client, self.home, tenant_id, enc.name, enc.dim)
            with self._lock:
                idx = self._indexes.setdefault(tenant_id, idx)
        return idx

    # --- search -------------------------------------------------------------------------

    def search(self, tenant_id: str, query: str, channel: Channel | str | None = None,
               top_k: int = 3) -> list[KBHit]:
        """The best `top_k` chunks for `query` that `channel` may see.

        `channel` None means no filter (operators, the CLI). An unknown channel name sees only
        articles open to every channel.
        """
        channel = _channel(channel)
        query = " ".join(query.split())
        if not query or top_k <= 0:
            return []
        idx = self.index(tenant_id)
        if len(idx.lexical) == 0:  # the in-memory catalogue of chunks
            return []
        query_vector = self.encoder.encode([query])[0]
        ranked = retrieval.hybrid(idx, query, query_vector, channel)
        return retrieval.to_hits(idx, ranked, query, top_k, channel)

    # --- status -------------------------------------------------------------------------

    def _collection(self, tenant_id: str):
        try:
            return self.client.get_collection(collection_name(tenant_id), embedding_function=None)
        except (ValueError, chromadb.errors.NotFoundError):
            return None

    def status(self, tenant_id: str) -> KBStatus:
        stale_after = float(self.settings.kb_stale_hours)
        record = read_record(self.home, tenant_id)
        if record is None:
            return KBStatus(tenant_id=tenant_id, available=False, reason="never_loaded",
                            stale_after_hours=stale_after)
        col = self._collection(tenant_id)
        chunks = len(col.get(where={"n": 0}, include=[])["ids"]) if col is not None else 0
        age = record.age_hours()
        reason = "empty" if chunks == 0 else "stale" if age > stale_after else ""
        return KBStatus(
            tenant_id=tenant_id, available=not reason, reason=reason, last_reload_at=record.last_reload_at,
            age_hours=round(age, 3), stale_after_hours=stale_after, docs=record.docs, chunks=chunks,
            errors=record.errors, encoder=record.encoder, kb_dir=record.kb_dir,
        )

    def is_available(self, tenant_id: str) -> bool:
        """False when the tenant's index is empty, was never loaded, or is older than
        `settings.kb_stale_hours`: then KB questions go to a human. Cheap enough to call
        before every search (a small JSON read and a count)."""
        record = read_record(self.home, tenant_id)
        if record is None or record.chunks == 0 or record.age_hours() > float(self.settings.kb_stale_hours):
            return False
        col = self._collection(tenant_id)
        return col is not None and col.count() > 0

    # --- reload -------------------------------------------------------------------------

    def queue_build(self, tenant_id: str) -> None:
        """Mark a tenant's index as being built until its next reload ends, so that KB
        questions meanwhile are told so instead of "unavailable"."""
        with self._lock:
            self._queued.add(tenant_id)

    def unqueue_build(self, tenant_id: str) -> None:
        with self._lock:
            self._queued.discard(tenant_id)

    def is_indexing(self, tenant_id: str) -> bool:
        with self._lock:
            return tenant_id in self._queued

    def reload(self, tenant_id: str, kb_dir: Path | str | None = None,
               progress: Progress | None = None) -> ReloadReport:
        """Bring the tenant's indexes in line with the folder, re-embedding only new chunks."""
        folder = Path(kb_dir) if kb_dir is not None else Path(self.settings.kb_dir)
        self.queue_build(tenant_id)
        try:
            with self._reload_lock:
                run_started(self.home, tenant_id)
                try:
                    if not folder.is_dir():
                        raise ReloadError(f"knowledge-base folder not found: {folder}")
                    report = self._reload(tenant_id, folder, progress or (lambda stage, done, total: None))
                except Exception as exc:
                    run_finished(self.home, tenant_id, error=str(exc)[:500] or type(exc).__name__)
                    raise
                run_finished(self.home, tenant_id)
                return report
        finally:
            self.unqueue_build(tenant_id)

    def _reload(self, tenant_id: str, folder: Path, progress: Progress) -> ReloadReport:
        started = time.perf_counter()
        encoder = self.encoder
        idx = self.index(tenant_id)

        progress("load", 0, 1)
        loaded = load_folder(folder)
        errors = [KBError(source=e.source, error=e.error) for e in loaded.errors]
        progress("load", 1, 1)
        chunks: list[Chunk] = []
        for n, doc in enumerate(loaded.documents, start=1):
            chunks.extend(chunk_document(doc, encoder.tokenizer))
            progress("chunk", n, len(loaded.documents))

        stored = idx.stored()
        old = dict(zip(stored.ids, stored.metadatas))
        new_ids = {c.id for c in chunks}
        failed_sources = {e.source for e in errors}
        kept = {i for i, m in old.items() if m.get("source") in failed_sources and i not in new_ids}
        to_delete = [i for i in old if i not in new_ids and i not in kept]
        to_add = [c for c in chunks if c.id not in old]
        hashes = [embed_hash(c, encoder.name) for c in to_add]

        # A chunk whose passages are unchanged (only e.g. its url or date moved) keeps its
        # vectors; everything else new is embedded in bulk (kb_loader/bulk.py).
        by_hash = {m.get("embed_hash"): i for i, m in old.items()}
        reuse = {c.id: by_hash[h] for c, h in zip(to_add, hashes) if h in by_hash}
        vectors: dict[str, np.ndarray] = {}
        if reuse:
            previous = idx.passage_vectors(sorted(set(reuse.values())))
            vectors = {new_id: previous[old_id] for new_id, old_id in reuse.items() if old_id in previous}
        to_embed = [c for c in to_add if c.id not in vectors]
        texts = [t for c in to_embed for t in c.passage_texts()]
        progress("embed", 0, len(texts))
        try:
            encoded = BulkEmbedder(encoder, self.bulk_workers).embed(
                texts, lambda done, total: progress("embed", done, total))
        finally:
            # Between reloads only queries run: an encoder that keeps something for bulk work
            # (the onnx one's all-core session) lets it go.
            if (release := getattr(encoder, "release_bulk", None)) is not None:
                release()
        at = 0
        for c in to_embed:
            vectors[c.id] = encoded[at : at + len(c.passages)]
            at += len(c.passages)

        progress("index", 0, 1)
        if to_add:
            idx.add(to_add, hashes, [vectors[c.id] for c in to_add])
        if to_delete:
            idx.delete(to_delete)
        if to_add or to_delete:
            idx.update_lexical(set(old), to_add, to_delete)
        elif len(idx.lexical) != idx.count():
            idx.rebuild_lexical()
        progress("index", 1, 1)

        report = self._report(tenant_id, folder, old, chunks, kept, errors)
        report.chunks = idx.count()
        report.chunks_embedded = len(to_embed)
        report.chunks_reused = len(to_add) - len(to_embed)
        report.chunks_deleted = len(to_delete)
        report.encoder = encoder.name
        report.seconds = round(time.perf_counter() - started, 3)
        write_record(self.home, FreshnessRecord(
            tenant_id=tenant_id, last_reload_at=datetime.now(timezone.utc), kb_dir=str(folder),
            docs=report.docs, chunks=report.chunks, errors=errors, encoder=encoder.name,
            seconds=report.seconds,
        ))
        log.info("kb.reloaded", tenant_id=tenant_id, added=len(report.added), updated=len(report.updated),
                 removed=len(report.removed), embedded=report.chunks_embedded, errors=len(errors),
                 seconds=report.seconds)
        for error in errors:
            log.warning("kb.file_skipped", tenant_id=tenant_id, source=error.source, error=error.error)
        for warning in loaded.warnings:
            log.warning("kb.file_repaired", tenant_id=tenant_id, source=warning.source, error=warning.error)
        return report

    @staticmethod
    def _report(tenant_id: str, folder: Path, old: dict[str, dict], chunks: list[Chunk],
                kept: set[str], errors: list[KBError]) -> ReloadReport:
        before: dict[str, set[str]] = {}
        for chunk_id, meta in old.items():
            before.setdefault(meta["doc_id"], set()).add(chunk_id)
        after: dict[str, set[str]] = {}
        for chunk in chunks:
            after.setdefault(chunk.doc_id, set()).add(chunk.id)
        kept_docs = sorted({old[i]["doc_id"] for i in kept} - set(after))
        return ReloadReport(
            tenant_id=tenant_id, kb_dir=str(folder),
            added=sorted(set(after) - set(before)),
            updated=sorted(d for d in after if d in before and after[d] != before[d]),
            unchanged=sorted(d for d in after if after[d] == before.get(d)),
            removed=sorted(set(before) - set(after) - set(kept_docs)),
            kept=kept_docs, docs=len(after) + len(kept_docs), errors=errors,
        )
