"""mailbridge.parse: every message parses, nothing raises, problems become flags."""

from __future__ import annotations

import email
import json
import random
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbridge import parse as parse_mod
from mailbridge.decode import Flags, decode_bytes
from mailbridge.parse import ParsedEmail, parse_message

DATA = Path(__file__).parent / "data" / "mail"
CORPUS = DATA / "corpus"
CPYTHON_DATA = Path(email.__file__).parent.parent / "test" / "test_email" / "data"

# Every flag that explains an empty `text`.
EXPLAINING = {"no_text", "only_quoted", "parse_error", "oversized"}


def _corpus_files() -> list[Path]:
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name != "LICENSE" and p.suffix not in {".json", ".jsonl"}
    )


def _cpython_files() -> list[Path]:
    return sorted(CPYTHON_DATA.glob("msg_*.txt"))


def _has_text_or_flag(parsed: ParsedEmail) -> bool:
    return bool(parsed.question_text.strip()) or bool(EXPLAINING & set(parsed.flags))


def test_corpus_is_complete():
    index = [json.loads(line) for line in (CORPUS / "index.jsonl").read_text().splitlines() if line]
    listed = {CORPUS / entry["path"] for entry in index}
    assert listed <= set(_corpus_files())
    assert len(_corpus_files()) >= 119


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_message_parses(path: Path):
    parsed = parse_message(path.read_bytes())
    assert parsed.message_id.startswith("<") and parsed.message_id.endswith(">")
    assert _has_text_or_flag(parsed), (parsed.flags, parsed.full_text[:200])
    assert "parse_error" not in parsed.flags
    parsed.model_dump_json()  # serialisable: no lone surrogates anywhere


@pytest.mark.skipif(
    not CPYTHON_DATA.is_dir(),
    reason=f"CPython's email test messages are not installed with this interpreter ({CPYTHON_DATA})",
)
@pytest.mark.parametrize("path", _cpython_files(), ids=lambda p: p.name)
def test_every_cpython_test_message_parses(path: Path):
    parsed = parse_message(path.read_bytes())
    assert _has_text_or_flag(parsed), (parsed.flags, parsed.full_text[:200])
    assert "parse_error" not in parsed.flags
    parsed.model_dump_json()


def test_cpython_test_messages_exist():
    if not CPYTHON_DATA.is_dir():
        pytest.skip(f"CPython's email test messages are not installed ({CPYTHON_DATA})")
    assert len(_cpython_files()) >= 40


def test_headers_and_threading_fields():
    parsed = parse_message((DATA / "misc" / "reply_in_thread.eml").read_bytes())
    assert parsed.message_id == "<CAJane0002@mail.gmail.com>"
    assert parsed.in_reply_to == "<reply-0001@deskhand.example>"
    assert parsed.references == ["<CAJane0001@mail.gmail.com>", "<reply-0001@deskhand.example>"]
    assert parsed.subject == "Re: Order 10423 never arrived"
    assert parsed.normalised_subject == "Order 10423 never arrived"
    assert (parsed.from_name, parsed.from_addr) == ("Jane Customer", "jane.customer@example.com")
    assert parsed.to == ["support@deskhand.example"]
    assert parsed.date is not None and parsed.date.utcoffset() is not None
    assert parsed.text == "It arrived this morning, thank you!"
    assert "out for delivery" in parsed.quoted_text
    assert "out for delivery" in parsed.full_text
    assert parsed.thread_keys[:3] == [
        "<CAJane0002@mail.gmail.com>",
        "<reply-0001@deskhand.example>",
        "<CAJane0001@mail.gmail.com>",
    ]
    assert parsed.thread_keys[3].startswith("subject:")
    assert parsed.flags == []


def test_missing_message_id_gets_a_stable_hash_id():
    raw = (DATA / "misc" / "mislabelled_charset.eml").read_bytes()
    first, second = parse_message(raw), parse_message(raw)
    assert first.message_id == second.message_id
    assert first.message_id.startswith("<sha256:") and first.message_id.endswith("@deskhand>")
    assert "no_message_id" in first.flags


def test_mislabelled_charset_falls_back_and_says_so():
    parsed = parse_message((DATA / "misc" / "mislabelled_charset.eml").read_bytes())
    assert parsed.text == "My café order 10999 is late."
    assert parsed.subject == "Café order"  # raw 8-bit header bytes, decoded as cp1252
    assert "charset_fallback:cp1252" in parsed.flags


def test_unknown_charset_is_flagged_and_decoded_as_utf8():
    parsed = parse_message((DATA / "misc" / "unknown_charset.eml").read_bytes())
    assert parsed.text == "Where is my order 10998? — thanks"
    assert {"undecodable_charset", "unknown_charset:x-made-up-charset", "charset_fallback:utf-8"} <= set(parsed.flags)


@pytest.mark.parametrize(
    ("payload", "charset", "text", "flag"),
    [
        ("café".encode("latin-1"), "iso-8859-1", "café", None),
        ("café".encode(), "iso-8859-1", "cafÃ©", None),  # declared wins when it decodes
        ("café".encode(), "us-ascii", "café", "charset_fallback:utf-8"),
        ("café".encode("cp1252"), "utf-8", "café", "charset_fallback:cp1252"),
        (b"\x81\x8d ok", None, "\ufffd\ufffd ok", "charset_fallback:cp1252"),
        ("привет".encode("koi8-r"), "koi8-r", "привет", None),
        ("한국".encode("cp949"), "ks_c_5601-1987", "한국", None),
    ],
)
def test_decode_bytes(payload, charset, text, flag):
    flags = Flags()
    assert decode_bytes(payload, charset, flags) == text
    if flag:
        assert flag in flags
    else:
        assert not flags


def test_html_only_message_is_converted():
    msg = EmailMessage()
    msg["From"] = "Ana <ana@example.com>"
    msg["Subject"] = "Question"
    msg["Message-ID"] = "<html-1@example.com>"
    msg.set_content(
        "<html><head><style>p{color:red}</style></head><body><p>Do you ship to <b>Norway</b>?</p>"
        "<ol><li>first</li></ol><p>1. not a list</p><p>-- not a dash</p></body></html>",
        subtype="html",
    )
    parsed = parse_message(msg.as_bytes())
    assert parsed.html_converted
    assert "Do you ship to Norway?" in parsed.text
    assert "color:red" not in parsed.full_text
    assert "1. not a list" in parsed.full_text and "\\" not in parsed.full_text


def test_plain_part_preferred_over_html():
    parsed = parse_message((DATA / "corpus/talon/tests/fixtures/standard_replies/gmail.eml").read_bytes())
    assert not parsed.html_converted
    assert parsed.text == "Hello"


def test_attachments_are_metadata():
    parsed = parse_message((CORPUS / "flanker/tests/fixtures/messages/attached-pdf.eml").read_bytes())
    assert parsed.text == "Test - body content"
    [pdf] = [a for a in parsed.attachments if a.content_type == "application/pdf"]
    assert pdf.name.endswith(".pdf") and pdf.size > 0


def test_card_numbers_and_passwords_are_masked_in_every_text_field():
    raw = (DATA / "misc" / "card_number.eml").read_bytes()
    parsed = parse_message(raw)
    dumped = parsed.model_dump_json()
    assert "4111" not in dumped and "hunter2" not in dumped
    assert parsed.text == "My card [card] was declined for order 10900, my password: [password]"


def test_oversized_parses_only_the_head():
    body = "Where is order 10423?\n" + ("padding line\n" * 5000)
    raw = f"From: a@example.com\nSubject: big\nMessage-ID: <big@example.com>\n\n{body}".encode()
    parsed = parse_message(raw, max_bytes=2048)
    assert "oversized" in parsed.flags
    assert parsed.size == len(raw)
    assert parsed.message_id == "<big@example.com>"
    assert parsed.text.startswith("Where is order 10423?")
    assert len(parsed.full_text) < 2048


def test_an_exception_inside_becomes_a_flag(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(parse_mod, "split_body", boom)
    raw = (DATA / "misc" / "reply_in_thread.eml").read_bytes()
    parsed = parse_message(raw)
    assert "parse_error" in parsed.flags and "parse_error:RuntimeError" in parsed.flags
    # What was read before the failure is kept.
    assert parsed.message_id == "<CAJane0002@mail.gmail.com>"
    assert parsed.from_addr == "jane.customer@example.com"
    assert "arrived this morning" in parsed.full_text


def test_a_failing_parser_still_returns_a_result(monkeypatch):
    class Exploding:
        def __init__(self, *a, **k):
            pass

        def parsebytes(self, data):
            raise ValueError("parser exploded")

    monkeypatch.setattr(parse_mod, "BytesParser", Exploding)
    parsed = parse_message(b"Subject: x\n\nhello 4111 1111 1111 1111")
    assert parsed.flags == ["parse_error", "parse_error:ValueError"]
    assert parsed.full_text == "Subject: x\n\nhello [card]"
    assert parsed.message_id.startswith("<sha256:")


@pytest.mark.parametrize("seed", range(40))
def test_garbage_never_raises(seed: int):
    rng = random.Random(seed)
    pieces = [
        b"From: ",
        b"Content-Type: multipart/mixed; boundary=\"b\"\r\n",
        b"--b\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"=?utf-8?b?broken",
        b"\r\n\r\n",
        b"Content-Type: text/plain; charset=\"\xff\xfe\"\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"<html><body>",
        bytes(rng.randrange(256) for _ in range(64)),
        b"Subject: " + bytes(rng.randrange(256) for _ in range(16)) + b"\r\n",
    ]
    raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30)))
    parsed = parse_message(raw)
    parsed.model_dump_json()
    assert _has_text_or_flag(parsed) or parsed.text


def test_empty_and_non_bytes_input():
    assert "no_text" in parse_message(b"").flags
    assert parse_message("Subject: hi\n\nhello").text == "hello"  # type: ignore[arg-type]


def test_auto_submitted_and_bounces_are_flagged():
    auto = parse_message(b"From: a@example.com\nAuto-Submitted: auto-replied\nSubject: Out of office\n\nAway")
    assert "auto_submitted" in auto.flags
    bounce = parse_message((CORPUS / "flanker/tests/fixtures/messages/bounce/gmail-invalid-address.eml").read_bytes())
    assert "bounce" in bounce.flags and not bounce.is_forward


def test_huge_header_is_cut_not_slow():
    parsed = parse_message((CORPUS / "flanker/tests/fixtures/messages/long-header.eml").read_bytes())
    assert "long_header" in parsed.flags
    assert parsed.subject.startswith("Die heiße Zypernsonne")
