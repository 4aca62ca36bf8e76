"""The onnxruntime encoder: parity with sentence-transformers, its cache, the numpy fallback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from bot.config import Settings
from kb_loader.encoder import BertEncoder, Encoder, get_encoder, load_bert, minilm_path
from kb_loader.onnx_encoder import OnnxBertEncoder

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-encoders")


@pytest.fixture(scope="session")
def onnx_fp32(onnx_cache) -> OnnxBertEncoder:
    return OnnxBertEncoder(minilm_path(), cache_dir=onnx_cache, variant="fp32", name="all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def onnx_int8(onnx_cache) -> OnnxBertEncoder:
    return OnnxBertEncoder(minilm_path(), cache_dir=onnx_cache, variant="int8", name="all-MiniLM-L6-v2")


def reference_cosines(encoder) -> tuple[list[str], np.ndarray]:
    ref = json.loads(REFERENCE.read_text())
    texts = [item["text"] for item in ref["items"]]
    expected = np.array([item["vector"] for item in ref["items"]], dtype=np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = encoder.encode(texts)
    assert got.shape == (len(texts), ref["dim"]) and got.dtype == np.float32
    return texts, (got.astype(np.float64) * expected).sum(axis=1)


def test_fp32_graph_matches_sentence_transformers(onnx_fp32):
    texts, cosines = reference_cosines(onnx_fp32)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.9999, f"row {worst} ({texts[worst][:40]!r}): cosine {cosines[worst]:.6f}"
    assert max(onnx_fp32.count_tokens(t) for t in texts) > 256  # truncation is exercised


def test_int8_graph_stays_close_to_sentence_transformers(onnx_int8):
    # Dynamic quantisation scales each activation tensor as a whole; on MiniLM that costs
    # about 0.007 of cosine on average (measured: min 0.985, mean 0.993 over the 52 rows),
    # short of the 0.9999 of fp32 and of a 0.999 goal. The bounds keep it from getting worse.
    texts, cosines = reference_cosines(onnx_int8)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.98, f"row {worst} ({texts[worst][:40]!r}): cosine {cosines[worst]:.6f}"
    assert cosines.mean() >= 0.99


def test_vectors_do_not_depend_on_batching_or_the_bulk_session(onnx_fp32):
    texts = ["short", "a somewhat longer sentence about refunds and returns", "", "Lieferung nach Österreich? 📦"]
    together = onnx_fp32.encode(texts)
    alone = np.vstack([onnx_fp32.encode([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(onnx_fp32.encode(texts, bulk=True), together, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert onnx_fp32.encode([]).shape == (0, 384)


def test_each_runtime_has_its_own_name(onnx_fp32, onnx_int8):
    numpy_encoder = load_bert(minilm_path(), name="all-MiniLM-L6-v2")
    # Names key the indexes' and the passage picker's vector caches.
    assert len({numpy_encoder.name, onnx_fp32.name, onnx_int8.name}) == 3
    for enc in (onnx_fp32, onnx_int8):
        assert isinstance(enc, Encoder) and enc.dim == 384
        assert enc.count_tokens("word " * 600) == 600  # counting is not truncated


def test_a_folder_model_keeps_its_own_pooling(tmp_path, onnx_cache, onnx_fp32):
    folder = tmp_path / "cls-model"
    shutil.copytree(minilm_path(), folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(minilm_path() / "model.safetensors")
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()),
                                   "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))

    enc = OnnxBertEncoder(folder, cache_dir=onnx_cache)

    assert enc.graph_path != onnx_fp32.graph_path  # the config is part of the cache key
    assert enc.name.startswith("folder:cls-model-") and enc.name.endswith("+onnx")
    texts = ["Where is my parcel?", "Lieferung nach Österreich"]
    numpy_cls = BertEncoder(folder).encode(texts)
    assert ((enc.encode(texts) * numpy_cls).sum(axis=1) >= 0.9999).all()
    assert ((enc.encode(texts) * onnx_fp32.encode(texts)).sum(axis=1) < 0.999).all()


def test_the_graph_is_cached_under_deskhand_home_and_nothing_in_the_users_home(tmp_path):
    home = tmp_path / "home"
    settings = Settings(home=home, cache_dir=None, kb_encoder_runtime="onnx")

    encoder = get_encoder(settings)
    encoder.encode(["where is my parcel?"], bulk=True)

    assert isinstance(encoder, OnnxBertEncoder)
    cached = sorted(p.relative_to(home).as_posix() for p in home.rglob("*.onnx"))
    assert cached == [encoder.graph_path.relative_to(home).as_posix()]
    assert cached[0].startswith("cache/encoders/") and cached[0].endswith("-fp32.onnx")
    assert sorted(Path.home().rglob("*")) == []  # no ~/.cache, no onnxruntime droppings
    # A second load reads the cached file instead of building it again.
    built_at = encoder.graph_path.stat().st_mtime_ns
    again = OnnxBertEncoder(minilm_path(), cache_dir=home / "cache" / "encoders", name="all-MiniLM-L6-v2")
    assert again.graph_path == encoder.graph_path and encoder.graph_path.stat().st_mtime_ns == built_at


def test_falls_back_to_numpy_when_the_graph_cannot_be_cached(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")

    with capture_logs() as logs:
        encoder = get_encoder(Settings(home=tmp_path / "home", cache_dir=blocker, kb_encoder_runtime="onnx-int8"))

    assert isinstance(encoder, BertEncoder) and encoder.name == "all-MiniLM-L6-v2"
    assert encoder.encode(["still works"]).shape == (1, 384)
    warning = next(e for e in logs if e["event"] == "encoder_runtime_unavailable")
    assert warning["log_level"] == "warning" and warning["fallback"] == "numpy"
    assert "cannot cache the ONNX encoder" in warning["error"]


def test_falls_back_to_numpy_when_onnx_is_not_installed(tmp_path):
    # A Python whose `onnx` cannot be imported, as on an install that skipped it.
    shadow = tmp_path / "no-onnx" / "onnx"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnx')\n")
    script = (
        "from bot.config import Settings\n"
        "from kb_loader.encoder import get_encoder\n"
        f"enc = get_encoder(Settings(home={str(tmp_path / 'home')!r}, cache_dir={str(tmp_path / 'cache')!r},"
        " kb_encoder_runtime='onnx'))\n"
        "print(type(enc).__name__, enc.name, enc.encode(['hello']).shape)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "BertEncoder all-MiniLM-L6-v2 (1, 384)"
    assert "encoder_runtime_unavailable" in done.stdout + done.stderr and "ImportError" in done.stdout + done.stderr
    assert not list((tmp_path / "cache").rglob("*.onnx"))


async def test_a_reload_lets_the_all_core_session_go_and_the_next_one_opens_it_again(tmp_path):
    from bot.config import load_settings
    from bot.runtime import open_runtime

    async with open_runtime(load_settings(home=tmp_path / "home")) as rt:
        await rt.ensure_kb(rt.settings.default_tenant)
        encoder = rt.kb.encoder
        assert isinstance(encoder, OnnxBertEncoder)
        assert encoder._bulk_session is None  # ~125 MB that queries never use
        report = rt.kb.reload("T_OTHER", ROOT / "fixtures" / "kb")  # a second tenant: embedded afresh
        assert report.chunks > 0 and encoder._bulk_session is None
        assert rt.kb.search("T_OTHER", "how long do refunds take", "cli", 3)
