"""Signatures: the sender's sign-off, contact block or mobile footer under the new text.

`strip_signature` is the last layer of `mailbridge.quotes.visible_reply`. It is conservative:
a question cut off costs more than a signature kept.
"""

from __future__ import annotations

import re


def tidy_edges(text: str) -> str:
    """Drop surrounding blank lines and trailing whitespace; inner spacing is kept."""
    return text.strip("\n").rstrip()


_FOOTER = re.compile(
    r"""^\s*(?:sent\ from\ my\ [\w\s.'-]{1,40}|sent\ from\ (?:mail|outlook|yahoo\ mail)\ for\ .{1,30}
      | get\ outlook\ for\ .{1,30}|sent\ (?:with|via|using)\ [\w\s.'-]{1,30}(?:\(.{0,80}\))?
      | envoy[ée]\ de\ mon\ .{1,30}|von\ meinem\ .{1,40}\ gesendet|enviado\ desde\ mi\ .{1,30}
      | inviato\ da\ .{1,40}|verzonden\ met\ .{1,40}|verstuurd\ vanaf\ mijn\ .{1,40}
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_CLOSING = re.compile(
    r"^\s*(?:thanks(?:\ (?:a\ lot|again|so\ much|in\ advance))?|thank\ you(?:\ (?:very\ much|so\ much))?|many\ thanks"
    r"|regards|best\ regards|kind\ regards|warm\ regards|best\ wishes|best|cheers|sincerely|yours(?:\ sincerely|\ truly)?"
    r"|br|rgds|mfg|viele\ grüße|mit\ freundlichen\ grüßen|gruß|cordialement|merci|saludos|un\ saludo|cordiali\ saluti"
    r"|met\ vriendelijke\ groet|hälsningar|med\ vänlig\ hälsning|с\ уважением|all\ the\ best|take\ care|thx|ta)"
    r"\s*[,.!]*\s*$",
    re.IGNORECASE | re.VERBOSE,
)
_SIG_DASHES = re.compile(r"^(?:--|-- |[-_=]{4,})\s*$")


def _name_tokens(sender_name: str, sender_addr: str) -> set[str]:
    tokens = {t.casefold() for t in re.findall(r"[^\W\d_]{2,}", sender_name or "")}
    local = (sender_addr or "").split("@")[0]
    tokens |= {t.casefold() for t in re.findall(r"[^\W\d_]{3,}", local)}
    return tokens


def strip_signature(text: str, sender_name: str = "", sender_addr: str = "") -> tuple[str, str]:
    """Split text into (body, signature).

    Conservative, because a cut question costs more than a kept signature: it never empties
    a text, never cuts a paragraph with a question or long lines, and a closing paragraph
    must start with a closing phrase ("Thanks,") or the sender's own name.
    """
    lines = tidy_edges(text).split("\n")
    if not any(ln.strip() for ln in lines):
        return "", ""

    def split_at(k: int) -> tuple[str, str]:
        body = tidy_edges("\n".join(lines[:k]))
        if not body:
            return tidy_edges(text), ""
        return body, "\n".join(lines[k:]).strip()

    def blank_before(k: int) -> bool:
        return k > 0 and not lines[k - 1].strip()

    # 1. "-- " (or a line of dashes/underscores after a blank line) above a short block.
    for k in range(len(lines) - 1, 0, -1):
        if _SIG_DASHES.match(lines[k].rstrip()):
            rest = [ln for ln in lines[k + 1 :] if ln.strip()]
            is_delimiter = lines[k].rstrip() == "--" or blank_before(k)
            if is_delimiter and rest and len(rest) <= 15 and all(len(ln) <= 80 for ln in rest):
                return split_at(k)
            break
    # 2. Mobile footers ("Sent from my iPhone") as the last lines, after a blank line.
    end = len(lines)
    while end > 1 and (_FOOTER.match(lines[end - 1]) or not lines[end - 1].strip()):
        end -= 1
    # lines[end:] is the trailing run of footers and blank lines; it must open with a blank.
    if end < len(lines) and not lines[end].strip() and any(_FOOTER.match(ln) for ln in lines[end:]):
        body, sig = split_at(end)
        more_body, more_sig = strip_signature(body, sender_name, sender_addr)
        return more_body, "\n".join(x for x in (more_sig, sig) if x)
    # 3. A short closing paragraph.
    starts = [k for k in range(1, len(lines)) if blank_before(k) and lines[k].strip()]
    if not starts:
        # No blank line at all: "…\nThanks,\nNoam" or "…\nThanks".
        for k in (len(lines) - 2, len(lines) - 1):
            rest = lines[k + 1 :]
            if k > 0 and _CLOSING.match(lines[k]) and all(len(ln) <= 40 and "?" not in ln for ln in rest):
                return split_at(k)
        return tidy_edges(text), ""
    k = starts[-1]
    para = [ln for ln in lines[k:] if ln.strip()]
    if len(para) > 6 or any(len(ln) > 60 or "?" in ln for ln in para):
        return tidy_edges(text), ""
    tokens = _name_tokens(sender_name, sender_addr)
    first_words = {w.casefold() for w in re.findall(r"[^\W\d_]{2,}", para[0])}
    addr = (sender_addr or "").casefold()
    is_sig = (
        bool(_CLOSING.match(para[0]))
        # "Stavros Xxxxxx / via mobile": a line of just the sender's name.
        or (bool(tokens) and len(para[0]) <= 40 and bool(first_words) and first_words <= tokens)
        # "John E. Doe, Ph.D. / President / … / john@example.com": a name line, and the
        # sender's address on a line of its own.
        or (
            bool(addr)
            and len(para) >= 3
            and len(para[0]) <= 40
            and bool(first_words & tokens)
            and any(addr in ln.casefold() and len(ln.strip()) - len(addr) <= 8 for ln in para)
        )
    )
    if not is_sig:
        return tidy_edges(text), ""
    # "Thanks,\n\nAlex": a closing paragraph just above the name belongs to it.
    prev = [j for j in starts if j < k]
    if prev:
        pk = prev[-1]
        prev_para = [ln for ln in lines[pk:k] if ln.strip()]
        if len(prev_para) == 1 and _CLOSING.match(prev_para[0]):
            k = pk
    return split_at(k)
