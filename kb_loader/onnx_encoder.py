"""BERT sentence encoders run by onnxruntime, from an ONNX graph this module writes itself.

There is no exporter here (that would need torch): `build_bert_graph` lays out the graph node
by node from `model.safetensors` with onnx's helpers, the same computation as the numpy
encoder in kb_loader/encoder.py (embeddings, post-LN BERT layers with exact-erf GELU, pooling
over the attention mask, L2 normalisation), so the two give the same vectors. An int8 variant
comes from onnxruntime's dynamic quantisation of the weight matrices.

Built graphs are cached as `.onnx` files in `<cache_path>/encoders/` (under DESKHAND_HOME),
keyed by the digest of the weights and configs, the variant and `GRAPH_VERSION`; building takes seconds, loading
a cached file a fraction of that. Nothing is written anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from kb_loader.encoder import (
    BertEncoder,
    EncoderError,
    _counting_tokenizer,
    _folder_name,
    _normalise,
    padded_batches,
)
from kb_loader.query_cache import QueryCache

#: Bump when the graph below changes, so that cached files of the old graph are not reused.
GRAPH_VERSION = 1
#: LayerNormalization needs 17; onnxruntime 1.32 runs it, and onnx 1.23 writes it.
OPSET = 17
IR_VERSION = 8

Variant = Literal["fp32", "int8"]


#: The files besides the weights that shape the graph (layers, activation, pooling).
_GRAPH_CONFIGS = ("config.json", "modules.json", "1_Pooling/config.json")


def model_digest(folder: Path) -> str:
    """sha256 of the weights file and the config files the graph is built from: the cache key
    of a built graph."""
    with open(folder / "model.safetensors", "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
    for name in _GRAPH_CONFIGS:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


class _GraphBuilder:
    """Collects nodes and initializers; each method adds one small piece of the graph."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, order="C"), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, prefix: str) -> str:
        # Weights are stored (out, in); onnx MatMul wants x @ W with W (in, out).
        w = self.const(prefix + ".weight", weight.T.astype(np.float32))
        b = self.const(prefix + ".bias", bias.astype(np.float32))
        return self.op("Add", self.op("MatMul", x, w), b)

    def layer_norm(self, x: str, weight: np.ndarray, bias: np.ndarray, prefix: str, eps: float) -> str:
        w = self.const(prefix + ".weight", weight.astype(np.float32))
        b = self.const(prefix + ".bias", bias.astype(np.float32))
        return self.op("LayerNormalization", x, w, b, axis=-1, epsilon=eps)


def build_bert_graph(folder: Path):
    """The onnx ModelProto of the BERT sentence-transformers model in `folder`.

    Inputs `input_ids` (int64, batch x seq) and `attention_mask` (float32, 1 for real tokens);
    output `embeddings` (float32, batch x hidden), pooled as the folder's Pooling module says
    and L2-normalised.
    """
    from onnx import TensorProto, checker
    from safetensors.numpy import load_file

    folder = Path(folder)
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / required).is_file():
            raise EncoderError(f"encoder folder {folder} has no {required}")
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type", "bert") != "bert":
        raise EncoderError(f"{folder}: only BERT models are supported, not {cfg.get('model_type')!r}")
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    head_dim = hidden // heads
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    act = cfg.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        raise EncoderError(f"{folder}: unsupported activation {act!r}")
    pooling, _ = BertEncoder._read_pooling(folder)
    raw = {k.removeprefix("bert."): v for k, v in load_file(str(folder / "model.safetensors")).items()}

    def get(key: str) -> np.ndarray:
        try:
            return raw[key].astype(np.float32)
        except KeyError:
            raise EncoderError(f"{folder}: weight {key} missing") from None

    g = _GraphBuilder()
    # Embeddings: word + position + token type 0 (single-segment input), folded into one table.
    word = g.const("word_embeddings", get("embeddings.word_embeddings.weight"))
    pos_type = g.const("position_type_embeddings", get("embeddings.position_embeddings.weight")
                       + get("embeddings.token_type_embeddings.weight")[0])
    seq_len = g.op("Shape", "input_ids", start=1, end=2)
    positions = g.op("Slice", pos_type, g.const("zero_1d", np.array([0], np.int64)), seq_len,
                     g.const("axis0", np.array([0], np.int64)))
    x = g.op("Add", g.op("Gather", word, "input_ids", axis=0), positions)
    # The layers work on (batch * seq, hidden) rows, so each projection with its bias is one
    # Gemm; only attention needs the (batch, heads, seq, head_dim) view.
    rows = g.const("rows_shape", np.array([-1, hidden], np.int64))
    x = g.op("Reshape", x, rows)
    x = g.layer_norm(x, get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"),
                     "embeddings.LayerNorm", eps)

    # Additive attention mask over keys, (batch, 1, 1, seq): padded keys get -1e9, as in numpy.
    one = g.const("one", np.array(1.0, np.float32))
    key_bias = g.op("Mul", g.op("Sub", one, "attention_mask"), g.const("mask_fill", np.array(-1e9, np.float32)))
    key_bias = g.op("Unsqueeze", key_bias, g.const("axes_1_2", np.array([1, 2], np.int64)))
    minus_one = g.const("minus_one", np.array([-1], np.int64))
    split_qkv = g.op("Concat", minus_one, seq_len, g.const("qkv_heads", np.array([3, heads, head_dim], np.int64)),
                     axis=0)
    batch_seq_hidden = g.op("Concat", minus_one, seq_len, g.const("hidden_1d", np.array([hidden], np.int64)),
                            axis=0)
    scale = np.float32(1.0 / math.sqrt(head_dim))
    sqrt2 = g.const("sqrt2", np.array(math.sqrt(2.0), np.float32))
    half = g.const("half", np.array(0.5, np.float32))

    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        # Query, key and value in one projection; the 1/sqrt(head_dim) score scale is folded
        # into the query part.
        w_qkv = np.concatenate([get(p + "attention.self.query.weight") * scale,
                                get(p + "attention.self.key.weight"), get(p + "attention.self.value.weight")])
        b_qkv = np.concatenate([get(p + "attention.self.query.bias") * scale,
                                get(p + "attention.self.key.bias"), get(p + "attention.self.value.bias")])
        qkv = g.op("Reshape", g.linear(x, w_qkv, b_qkv, p + "qkv"), split_qkv)  # (b, n, 3, h, hd)
        qkv = g.op("Transpose", qkv, perm=[2, 0, 3, 1, 4])  # (3, b, h, n, hd)
        q, k, v = (g.op("Gather", qkv, g.const(f"{p}pick{j}", np.array(j, np.int64)), axis=0) for j in range(3))
        scores = g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2]))
        probs = g.op("Softmax", g.op("Add", scores, key_bias), axis=-1)
        ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])  # (b, n, h, hd)
        ctx = g.op("Reshape", ctx, rows)
        attn = g.linear(ctx, get(p + "attention.output.dense.weight"), get(p + "attention.output.dense.bias"),
                        p + "attention.output")
        x = g.layer_norm(g.op("Add", attn, x), get(p + "attention.output.LayerNorm.weight"),
                         get(p + "attention.output.LayerNorm.bias"), p + "attention.LayerNorm", eps)
        inter = g.linear(x, get(p + "intermediate.dense.weight"), get(p + "intermediate.dense.bias"),
                         p + "intermediate")
        if act == "gelu":  # exact: x * 0.5 * (1 + erf(x / sqrt 2)), the pattern onnxruntime fuses
            gate = g.op("Add", g.op("Erf", g.op("Div", inter, sqrt2)), one)
        else:  # the tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = g.op("Mul", g.op("Mul", inter, inter), inter)
            inner = g.op("Add", inter, g.op("Mul", cube, g.const(p + "c3", np.array(0.044715, np.float32))))
            inner = g.op("Mul", inner, g.const(p + "c1", np.array(math.sqrt(2.0 / math.pi), np.float32)))
            gate = g.op("Add", g.op("Tanh", inner), one)
        inter = g.op("Mul", g.op("Mul", inter, gate), half)
        out = g.linear(inter, get(p + "output.dense.weight"), get(p + "output.dense.bias"), p + "output")
        x = g.layer_norm(g.op("Add", out, x), get(p + "output.LayerNorm.weight"),
                         get(p + "output.LayerNorm.bias"), p + "output.LayerNorm", eps)

    x = g.op("Reshape", x, batch_seq_hidden)
    mask3 = g.op("Unsqueeze", "attention_mask", g.const("axis2", np.array([2], np.int64)))
    axis1 = g.const("axis1", np.array([1], np.int64))
    if pooling == "cls":
        pooled = g.op("Gather", x, g.const("index0", np.array(0, np.int64)), axis=1)
    elif pooling == "max":
        masked = g.op("Add", x, g.op("Mul", g.op("Sub", one, mask3), g.const("max_fill", np.array(-1e9, np.float32))))
        pooled = g.op("ReduceMax", masked, axes=[1], keepdims=0)
    else:
        summed = g.op("ReduceSum", g.op("Mul", x, mask3), axis1, keepdims=0)
        count = g.op("Max", g.op("ReduceSum", mask3, axis1, keepdims=0), one)
        pooled = g.op("Div", summed, count)
    norm = g.op("Max", g.op("ReduceL2", pooled, axes=[1], keepdims=1), g.const("tiny", np.array(1e-12, np.float32)))
    g.nodes.append(g.helper.make_node("Div", [pooled, norm], ["embeddings"], name="normalise"))

    graph = g.helper.make_graph(
        g.nodes, "bert_sentence_encoder",
        inputs=[g.helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                g.helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["batch", "seq"])],
        outputs=[g.helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.initializers,
    )
    model = g.helper.make_model(graph, opset_imports=[g.helper.make_opsetid("", OPSET)],
                                producer_name="deskhand", producer_version=str(GRAPH_VERSION))
    model.ir_version = IR_VERSION
    checker.check_model(model)
    return model


def _write_atomically(path: Path, write) -> None:
    """Call `write(tmp_path)` and move the result into place, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _DropPreprocessHint(logging.Filter):
    # quantize_dynamic logs a hint to run its pre-processing first through the root logger;
    # the hint is about graphs without shape information, which this one is not.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")


def _quantize(fp32_path: Path, out_path: Path) -> None:
    """int8 weights (per output channel) for every MatMul with a constant side; activations
    are quantised at run time, per tensor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(fp32_path, out_path, op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(hint)


def cached_graph(folder: Path, cache_dir: Path, variant: Variant) -> Path:
    """The path of the `.onnx` file of `folder`'s model, building and caching it if needed."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise EncoderError(f"encoder folder {folder} has no model.safetensors")
    key = f"{folder.name}-{model_digest(folder)[:16]}-g{GRAPH_VERSION}"
    fp32_path = cache_dir / f"{key}-fp32.onnx"
    path = cache_dir / f"{key}-{variant}.onnx"
    if path.is_file():
        return path
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if not fp32_path.is_file():
            import onnx

            model = build_bert_graph(folder)
            _write_atomically(fp32_path, lambda tmp: onnx.save_model(model, str(tmp)))
        if variant == "int8":
            _write_atomically(path, lambda tmp: _quantize(fp32_path, tmp))
    except OSError as exc:
        raise EncoderError(f"cannot cache the ONNX encoder in {cache_dir}: {exc}") from exc
    return path


class OnnxBertEncoder:
    """A BERT-family sentence-transformers model run by onnxruntime.

    Same interface and vectors as `BertEncoder` (fp32: cosine >= 0.9999 to it; int8: about
    0.999). Queries run on one intra-op thread so that they do not compete with the bot's
    workers; `encode(texts, bulk=True)` uses a second session with one thread per core, for
    indexing.
    """

    def __init__(self, folder: Path, *, cache_dir: Path, variant: Variant = "fp32",
                 name: str | None = None, batch_tokens: int = 4096):
        import onnxruntime  # noqa: F401  (fail here, before building, if it is missing)

        self.queries = QueryCache()
        folder = Path(folder)
        self.folder = folder
        self.variant = variant
        self.graph_path = cached_graph(folder, cache_dir, variant)
        cfg = json.loads((folder / "config.json").read_text())
        self.hidden = int(cfg["hidden_size"])
        self.max_seq_length = BertEncoder._read_max_len(folder, cfg)
        self.batch_tokens = batch_tokens
        self.name = f"{name or _folder_name(folder)}+onnx" + ("-int8" if variant == "int8" else "")
        self.tokenizer = _counting_tokenizer(folder / "tokenizer.json")
        self._encode_tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._encode_tok.no_padding()
        self._encode_tok.enable_truncation(max_length=self.max_seq_length)
        self._session = self._open(threads=1)
        self._bulk_session = None
        self._bulk_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.hidden

    def _open(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initializers are noise
        # Idle pool threads would spin on a core the bot's workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.graph_path), sess_options=options,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind types
            raise EncoderError(f"onnxruntime cannot load {self.graph_path}: {exc}") from exc

    def _bulk(self):
        with self._bulk_lock:
            if self._bulk_session is None:
                threads = os.cpu_count() or 1
                self._bulk_session = self._session if threads == 1 else self._open(threads)
            return self._bulk_session

    def release_bulk(self) -> None:
        """Drop the all-core session after a reload: it holds about 125 MB of its own, and
        queries never use it. The next reload opens it again (well under a second)."""
        with self._bulk_lock:
            self._bulk_session = None  # on one core it is the query session, which stays open

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        # A query may have been encoded for another part of this turn already.
        return self.queries.encode(texts, self._encode, bulk=bulk)

    def _encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        session = self._bulk() if bulk else self._session
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        for batch, ids, mask in padded_batches(self._encode_tok, texts, self.batch_tokens):
            out[batch] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        # The graph normalises already; again here so rounding never leaves a norm off 1.
        return _normalise(out)
