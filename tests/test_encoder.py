"""The local sentence encoder: parity with sentence-transformers, batching, config, OpenAI."""

from __future__ import annotations

import json
import math
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bot.config import Settings
from kb_loader.encoder import (
    BertEncoder,
    Encoder,
    EncoderError,
    OpenAIEncoder,
    gelu_exact,
    get_encoder,
    load_bert,
    minilm_path,
)

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="session")
def minilm() -> BertEncoder:
    return load_bert(minilm_path(), name="all-MiniLM-L6-v2")


def test_matches_sentence_transformers_reference(minilm):
    ref = json.loads(REFERENCE.read_text())
    texts = [item["text"] for item in ref["items"]]
    expected = np.array([item["vector"] for item in ref["items"]], dtype=np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)

    got = minilm.encode(texts)

    assert got.shape == (len(texts), ref["dim"]) and got.dtype == np.float32
    cosines = (got.astype(np.float64) * expected).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.9999, f"row {worst} ({texts[worst][:40]!r}): cosine {cosines[worst]:.6f}"
    # The set covers inputs past the 256-token truncation.
    assert max(minilm.count_tokens(t) for t in texts) > 256


def test_vectors_do_not_depend_on_batching(minilm):
    texts = ["short", "a somewhat longer sentence about refunds and returns", "", "Lieferung nach Österreich? 📦"]
    together = minilm.encode(texts)
    alone = np.vstack([minilm.encode([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_gelu_uses_the_exact_erf():
    xs = np.concatenate([np.linspace(-12, 12, 20001), np.geomspace(1e-8, 50, 500), -np.geomspace(1e-8, 50, 500)])
    xs = xs.astype(np.float32)
    exact = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in xs.astype(np.float64)])
    # Within float32 resolution of the result.
    assert (np.abs(gelu_exact(xs) - exact) <= 5e-7 + 2.5e-7 * np.abs(exact)).all()


def test_protocol_and_token_counting(minilm):
    assert isinstance(minilm, Encoder)
    assert minilm.dim == 384 and minilm.name == "all-MiniLM-L6-v2"
    # Counting ignores [CLS]/[SEP] and is not truncated.
    assert minilm.count_tokens("order") == 1
    assert minilm.count_tokens("word " * 600) == 600


def test_get_encoder_loads_once_per_process(minilm):
    settings = Settings(kb_encoder_runtime="numpy")
    assert get_encoder(settings) is minilm
    assert get_encoder(Settings(kb_encoder="minilm", kb_encoder_runtime="numpy")) is minilm


def test_folder_encoder_reads_pooling_from_config(tmp_path, minilm):
    folder = tmp_path / "cls-model"
    shutil.copytree(minilm_path(), folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(minilm_path() / "model.safetensors")
    pooling = folder / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(cfg))

    enc = get_encoder(Settings(kb_encoder="folder", kb_encoder_path=folder, kb_encoder_runtime="numpy"))

    assert isinstance(enc, BertEncoder) and enc.pooling == "cls" and enc.name.startswith("folder:cls-model-")
    text = ["Where is my parcel?"]
    vec = enc.encode(text)
    assert np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    assert (vec @ minilm.encode(text).T).item() < 0.999  # CLS pooling gives another vector


def test_folder_encoder_needs_a_path_and_a_bert_model(tmp_path):
    with pytest.raises(EncoderError, match="kb_encoder_path"):
        get_encoder(Settings(kb_encoder="folder"))
    with pytest.raises(EncoderError, match="config.json"):
        get_encoder(Settings(kb_encoder="folder", kb_encoder_path=tmp_path))


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        # Deterministic 3-d vectors; returned in reverse order to check re-ordering by index.
        data = [{"object": "embedding", "index": i, "embedding": [len(t), 1.0, float(i)]}
                for i, t in enumerate(body["input"])]
        payload = json.dumps({"object": "list", "data": data[::-1], "model": body["model"],
                              "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_openai_compatible_endpoint(minilm):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    enc = OpenAIEncoder(base_url=base_url, api_key="test", model="embed-small", tokenizer=minilm.tokenizer,
                        batch_size=2)
    try:
        vecs = enc.encode(["a", "bbb", "cc"])
        assert enc.dim == 3 and enc.name == "openai:embed-small"
        expected = np.array([[1, 1, 0], [3, 1, 1], [2, 1, 0]], dtype=np.float32)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        assert np.allclose(vecs, expected, atol=1e-6)
        assert [r["path"] for r in _EmbeddingsHandler.requests] == ["/v1/embeddings"] * 2
        assert enc.count_tokens("order") == 1
    finally:
        enc.close()
        server.shutdown()
        server.server_close()


def test_the_openai_encoder_uses_the_configured_embedding_model(monkeypatch):
    # A local OpenAI-compatible server serves its own embedding models.
    monkeypatch.setenv("DESKHAND_KB_EMBEDDING_MODEL", "nomic-embed-text")
    settings = Settings(kb_encoder="openai", openai_base_url="http://127.0.0.1:9/v1")
    assert get_encoder(settings).name == "openai:nomic-embed-text"
    assert get_encoder(Settings(kb_encoder="openai", openai_base_url="http://127.0.0.1:9/v1",
                                kb_embedding_model="")).name == "openai:text-embedding-3-small"
