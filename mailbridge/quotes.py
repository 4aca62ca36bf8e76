"""Finding the new text in an email body: quoted replies and signatures removed.

Three layers, used in this order:

1. `scan_body` (ours) finds where the earlier message starts and what is quoted:
   - forward markers ("---------- Forwarded message ---------", "Begin forwarded message:");
   - "-----Original Message-----" and Outlook header blocks ("From: … Sent: … To: …
     Subject: …", also after a "____" or "* * *" separator, also in a few other languages);
   - attributions such as "On <date>, <name> wrote:" over up to four lines, and localised
     ones ("… schrieb:", "… a écrit :", "<date>, <name> <addr>:");
   - ">"-quoted blocks.
   An attribution followed by ">" lines only removes itself and the quote, so inline replies
   below it are kept; one followed by unquoted text marks the start of the earlier message.
2. `email_reply_parser` then takes the text above that point and removes what is left of
   the quotes and the signature ("-- ", "Sent from my iPhone", "-Name", "__" footers). Its
   own header and "On … wrote:" rules are turned off: a customer writing "To: Jane Doe" or
   "On Monday the courier wrote:" must not lose the rest of the message; layer 1 already
   handled real header blocks and attributions.
3. `strip_signature` finishes the job with what the library does not know: the sender's own
   name or address in a short closing paragraph, closings like "Thanks,", and mobile footers
   such as "Get Outlook for iOS".

`extract_reply` (layer 1 only) keeps the signature; `visible_reply` (all layers) does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_reply_parser import EmailMessage as _ReplyParserMessage

from mailbridge.signatures import strip_signature, tidy_edges

_BLANK = re.compile(r"^\s*$")

FORWARD_MARKER = re.compile(
    r"""^\s*[-_=*\s>]*(?:
        forwarded\ message|forwarded\ e-?mail|weitergeleitete\ nachricht|message\ transf[ée]r[ée]
      | mensaje\ reenviado|messaggio\ inoltrato|doorgestuurd\ bericht|vidarebefordrat\ meddelande
      | videresendt\ meddelelse|videresendt\ melding|mensagem\ encaminhada|пересылаемое\ сообщение
    )[-_=*\s]*:?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
APPLE_FORWARD_MARKER = re.compile(
    r"""^\s*(?:begin\ forwarded\ message|d[ée]but\ du\ message\ r[ée]exp[ée]di[ée]
      | anfang\ der\ weitergeleiteten\ nachricht|comienzo\ del\ mensaje\ reenviado
      | inizio\ messaggio\ inoltrato|doorgestuurd\ bericht\ begint)\s*:\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
ORIGINAL_MARKER = re.compile(
    r"""^\s*[-_=*\s]*(?:
        original\ message|ursprüngliche\ nachricht|message\ d'origine|mensaje\ original
      | messaggio\ originale|oorspronkelijk\ bericht|originalmeddelande|opprinnelig\ melding
      | alkuperäinen\ viesti|исходное\ сообщение|mensagem\ original|original\ nachricht
    )[-_=*\s]*:?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
SEPARATOR = re.compile(r"^\s*(?:[-_=]{5,}|(?:\*\s*){3,})\s*$")

# Header names in an Outlook-style block, by role. "Date" counts as "sent".
_HEADER_ROLES = {
    "from": "from von de da van från fra od от lähettäjä feladó kimden 发件人",
    "sent": "sent date gesendet datum envoyé enviado enviada fecha data inviato verzonden "
    "skickat sendt wysłano отправлено дата lähetetty 发送时间 日期",
    "to": "to an à a para aan till til do кому vastaanottaja cc kopie copie cc'd",
    "subject": "subject betreff objet asunto assunto oggetto onderwerp ämne emne temat тема "
    "aihe 主题",
    "reply-to": "reply-to",
}
_ROLE_OF = {name: role for role, names in _HEADER_ROLES.items() for name in names.split()}
_HEADER_LINE = re.compile(
    r"^\s*[*_]*\s*(?P<name>[^\W\d_][\w'-]{0,20}(?: [^\W\d_][\w-]{0,12})?)\s*[*_]*\s*:[*_]*\s*(?P<value>.*?)\s*$"
)

_ATTRIBUTION_END = re.compile(
    r"(?:wrote|writes|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef|escreveu|skrev|kirjoitti"
    r"|napisał(?:a)?|написал(?:а)?|yazdı)\s*:\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(
    r"^\s*(?:on|am|le|el|il|op|em|den|på|w\s+dniu|dne)\s", re.IGNORECASE
)
_DATEISH = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2}:\d{2}|\b(?:19|20)\d{2}\b")


def header_line(line: str) -> tuple[str, str] | None:
    """(role, value) if the line looks like a header of an embedded message."""
    m = _HEADER_LINE.match(line)
    if not m:
        return None
    role = _ROLE_OF.get(m.group("name").strip().casefold())
    return (role, m.group("value")) if role else None


def is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _next_nonblank(lines: list[str], i: int) -> int | None:
    while i < len(lines):
        if not _BLANK.match(lines[i]):
            return i
        i += 1
    return None


def header_block_at(lines: list[str], i: int) -> int | None:
    """End (exclusive) of an Outlook-style header block starting at line i, or None.

    The block is a run of header lines (continuation lines allowed) with a From role and a
    Sent/Date or Subject role: "From: Berlin / To: Paris" in prose is not a block.
    """
    first = header_line(lines[i]) if i < len(lines) else None
    if first is None:
        return None
    roles = {first[0]}
    prev_role = first[0]
    j = i + 1
    while j < len(lines) and j < i + 12:
        line = lines[j]
        if _BLANK.match(line):
            break
        found = header_line(line)
        if found:
            roles.add(found[0])
            prev_role = found[0]
        elif not (line[:1].isspace() or prev_role == "to"):
            break  # not a header and not a wrapped recipient list
        j += 1
    if "from" in roles and ("sent" in roles or "subject" in roles) and len(roles) >= 2:
        return j
    return None


def _attribution_at(lines: list[str], i: int) -> tuple[int, bool] | None:
    """(last line, strong) of an attribution starting at line i, or None.

    Strong attributions carry an address or a time of day as well as the verb: only those
    may cut off unquoted text below them ("On Monday the shop wrote:" in prose may not).
    """
    first = lines[i]
    if _BLANK.match(first) or len(first) > 300:
        return None
    starts_ok = bool(_ATTRIBUTION_START.match(first)) or "@" in first or bool(_DATEISH.search(first))
    if not starts_ok:
        # "Marc Slemko wrote:" alone on a line, directly above a ">" quote.
        if _ATTRIBUTION_END.search(first) and len(first) <= 120:
            nxt = _next_nonblank(lines, i + 1)
            if nxt is not None and is_quoted(lines[nxt]):
                return i, False
        return None
    joined = ""
    for j in range(i, min(i + 4, len(lines))):
        line = lines[j]
        if _BLANK.match(line) or is_quoted(line):
            return None
        joined = f"{joined} {line.strip()}"
        if _ATTRIBUTION_END.search(joined):
            strong = ("@" in joined or bool(re.search(r"\d{1,2}:\d{2}", joined))) and bool(
                _DATEISH.search(joined)
            )
            return j, strong
    return None


def _colon_attribution_at(lines: list[str], i: int) -> int | None:
    """A localised attribution without a known verb ('26.06.2014, 14:41, "Bob" <b@x>:'),
    accepted only when a ">" quote follows it."""
    first = lines[i]
    if not ("@" in first or _DATEISH.search(first) or _ATTRIBUTION_START.match(first)):
        return None
    for j in range(i, min(i + 2, len(lines))):
        line = lines[j].rstrip()
        if _BLANK.match(line) or is_quoted(line):
            return None
        if line.endswith(":"):
            joined = " ".join(x.strip() for x in lines[i : j + 1])
            if len(joined) > 250 or not ("@" in joined or _DATEISH.search(joined)):
                return None
            nxt = _next_nonblank(lines, j + 1)
            return j if nxt is not None and is_quoted(lines[nxt]) else None
    return None


@dataclass(frozen=True)
class BodyScan:
    """Where the earlier message starts, and which lines above it are quotes."""

    lines: list[str]
    cut: int | None  # first line of the earlier message (forward, original, header block)
    cut_kind: str | None  # "forward", "apple_forward", "original", "headers", "attribution"
    dropped: frozenset[int]  # attribution lines followed by a ">" quote

    def head_lines(self) -> list[str]:
        end = len(self.lines) if self.cut is None else self.cut
        return [ln for k, ln in enumerate(self.lines[:end]) if k not in self.dropped]

    def tail(self) -> str:
        return "" if self.cut is None else "\n".join(self.lines[self.cut :])


def scan_body(text: str) -> BodyScan:
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    dropped: set[int] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _BLANK.match(line) or is_quoted(line):
            i += 1
            continue
        if FORWARD_MARKER.match(line):
            return BodyScan(lines, _back_to_separator(lines, i), "forward", frozenset(dropped))
        if APPLE_FORWARD_MARKER.match(line):
            return BodyScan(lines, i, "apple_forward", frozenset(dropped))
        if ORIGINAL_MARKER.match(line):
            return BodyScan(lines, i, "original", frozenset(dropped))
        if header_block_at(lines, i) is not None:
            return BodyScan(lines, _back_to_separator(lines, i), "headers", frozenset(dropped))
        found = _attribution_at(lines, i)
        if found is None:
            colon_end = _colon_attribution_at(lines, i)
            found = None if colon_end is None else (colon_end, False)
        if found is not None:
            end, strong = found
            nxt = _next_nonblank(lines, end + 1)
            if nxt is None or is_quoted(lines[nxt]):
                dropped.update(range(i, end + 1))
                i = end + 1
                continue
            if strong:
                return BodyScan(lines, i, "attribution", frozenset(dropped))
        i += 1
    return BodyScan(lines, None, None, frozenset(dropped))


def _back_to_separator(lines: list[str], i: int) -> int:
    """Move a cut up to a separator line ("_____", "-----", "* * *") just above it."""
    j = i - 1
    while j >= 0 and i - j <= 3 and _BLANK.match(lines[j]):
        j -= 1
    if j >= 0 and i - j <= 3 and SEPARATOR.match(lines[j]):
        return j
    return i


def _drop_quotes(lines: list[str]) -> tuple[list[str], list[str]]:
    """Split lines into paragraphs of new text (joined by a blank line where a quote was
    removed) and the quoted lines."""
    kept: list[list[str]] = [[]]
    quoted: list[str] = []
    for line in lines:
        if is_quoted(line):
            quoted.append(line)
            if kept[-1]:
                kept.append([])
        else:
            kept[-1].append(line)
    blocks = ["\n".join(block).strip("\n") for block in kept]
    return [b for b in blocks if b.strip()], quoted


def extract_reply(text: str) -> str:
    """The new text of a body with quotes and earlier messages removed; signature kept."""
    return split_body(text).reply


_HIDDEN_WROTE = "wrote\x00:"


class _ReplyMessage(_ReplyParserMessage):
    # Single "To: x" / "Subject: y" lines, and "On Monday the courier wrote:" in prose, are
    # ordinary text for us: real header blocks and attributions were handled by scan_body.
    HEADER_REGEX = re.compile(r"(?!)")
    QUOTE_HDR_REGEX = re.compile(r"(?!)")


@dataclass(frozen=True)
class SplitBody:
    reply: str  # new text, quotes removed, signature kept
    visible: str  # new text, quotes and signature removed
    quoted: str  # what was removed as quotes or earlier messages
    cut_kind: str | None  # how the earlier message was recognised, if it was


def split_body(text: str, sender_name: str = "", sender_addr: str = "") -> SplitBody:
    scan = scan_body(text)
    head = scan.head_lines()
    blocks, quoted_lines = _drop_quotes(head)
    reply = tidy_edges("\n\n".join(blocks))
    # The library also rewrites "On … wrote:" spans across lines; attributions are ours to
    # handle, so hide the verb from it and put it back afterwards.
    hidden = "\n".join(head).replace("wrote:", _HIDDEN_WROTE)
    visible = _ReplyMessage(hidden).read().reply.replace(_HIDDEN_WROTE, "wrote:")
    visible, _sig = strip_signature(visible, sender_name, sender_addr)
    quoted_parts = [ln for k, ln in enumerate(scan.lines) if k in scan.dropped]
    quoted = "\n".join([*quoted_parts, *quoted_lines, scan.tail()]).strip()
    return SplitBody(reply=reply, visible=tidy_edges(visible), quoted=quoted, cut_kind=scan.cut_kind)


def visible_reply(text: str, sender_name: str = "", sender_addr: str = "") -> str:
    """The new text with quotes and the signature removed."""
    return split_body(text, sender_name, sender_addr).visible
