"""Person names and street addresses in customer text, by patterns and gazetteers.

Offline and in microseconds, which a small NER model is not (bench/pii.py; the README
has the figures and what is missed).

Names. The gazetteer is the US Census 1990 first-name and surname lists shipped in the
`names` package (5,494 first names, 88,799 surnames). A name is found:
- after a strong cue ("my name is", "name:", "call me", "Mr", "Ms", "Dr", "my husband,", …)
  or on a sign-off line ("Regards Björn Andersson", "-- Aoife"): one to three capitalised
  words, whatever they are;
- after a weak cue ("I'm", "this is", "Hi", "Dear", "Thanks,"), or with no cue at all: a
  capitalised gazetteer first name, followed by capitalised words that are gazetteer
  surnames; with no cue a lone first name is not enough, and a first name that is also a
  word ("May", "Will", "Grace") needs a surname after it.

Addresses. A house number, one to four capitalised street words and a street suffix
("221B Baker Street", "1600 Pennsylvania Ave NW"), optionally a unit ("Apt 4B", "Flat 3,"),
a city, a state or postcode; German "Hauptstraße 5, 10115 Berlin"; Dutch "Keizersgracht
123"; French "12 rue de Rivoli"; Spanish and Italian "Calle Mayor 5", "Via Roma 10"; and
"PO Box 123".
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.brain.pii import Span

# Words that are also census first names but that customers write for other reasons.
COMMON_WORDS = frozenset("""
may june april august will bill hope joy rose faith grace sunny summer dawn ray mark page
lane art sue chase case guy major rich lou ok hi hey thanks thank dear best regards cheers
the and for you not but all any can her his its our out too sir madam team sales support
""".split())

_STRONG_CUE = (r"(?:my name is|my name's|name is|name:|full name:?|call me|signed|customer name:?|"
               r"account holder:?|on behalf of|addressed to|recipient:?|mr\.?|mrs\.?|ms\.?|miss|dr\.?|prof\.?|"
               r"my (?:husband|wife|partner|father|mother|dad|mum|mom|son|daughter|brother|sister|colleague|"
               r"friend|boss),?)")
_WEAK_CUE = (r"(?:i'm|i am|im|this is|it's|it is|hi|hello|hey|dear|thanks|thank you|regards|best|cheers|"
             r"sincerely|kind regards|best wishes|from|for|to|with|ask|tell|by|and|contact)")
_NAME_WORD = r"[A-Z][a-zà-öø-ÿ]+(?:[-'][A-Z]?[a-zà-öø-ÿ]+)?"
_STRONG = re.compile(rf"(?i:\b{_STRONG_CUE})[ \t]+((?:{_NAME_WORD}|[A-Z]\.)(?:[ \t]+{_NAME_WORD}){{0,2}})")
_WORD = re.compile(_NAME_WORD)
_WORDS = re.compile(rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD})*")
_WEAK_BEFORE = re.compile(rf"(?i:\b{_WEAK_CUE})[ \t]*[,:]?[ \t]*$")
_SIGN_OFF = re.compile(r"(?i)(?:^|\n)[ \t]*(?:thanks|thank you|regards|best|cheers|sincerely|kind regards|"
                       r"best regards|best wishes|many thanks|warm regards)[ \t]*[,!.]?[ \t]*(?:\n|[ \t]+-?[ \t]*)$")

STREET_SUFFIXES = (
    "street|st|avenue|ave|av|road|rd|lane|ln|drive|dr|boulevard|blvd|court|ct|way|place|pl|terrace|"
    "terr|circle|cir|parkway|pkwy|highway|hwy|square|sq|crescent|cres|close|row|mews|grove|gardens|"
    "walk|hill|trail|trl|alley|plaza|loop|pike|path|broadway")
# "Regards Björn Andersson" / "-- Aoife": a sign-off and then words that end the line.
_SIGNATURE = re.compile(
    rf"(?i:(?:^|\n)[ \t]*(?:--|—|thanks|thank you|regards|best|cheers|sincerely|kind regards|best regards|"
    rf"best wishes|many thanks|warm regards)[ \t]*[,!.]?[ \t\n]+)"
    rf"((?:{_NAME_WORD}|[A-Z]\.)(?:[ \t]+{_NAME_WORD}){{0,2}})[ \t]*(?=\n|$)")
_STREET_WORD = r"(?:[A-Z][A-Za-z'.-]*|\d+(?:st|nd|rd|th))"
_US_ADDRESS = re.compile(
    rf"(?:\b(?i:flat|apt|apartment|unit|suite)\.?[ \t]*\w{{1,5}},[ \t]*)?"  # "Flat 3, "
    rf"\b\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?[ \t]+(?:[NSEW]\.?[ \t]+)?(?:{_STREET_WORD}[ \t]+){{0,3}}"
    rf"{_STREET_WORD}[ \t]+(?i:{STREET_SUFFIXES})\b\.?(?:[ \t]+(?:[NS][EW]|[NSEW])\b)?"
    rf"(?:,?[ \t]+(?i:apt|apartment|suite|ste|unit|flat|floor|fl|#)\.?[ \t]*#?[A-Za-z0-9-]+)?"
    rf"(?:,[ \t]*[A-Z][A-Za-z.]+(?!\d)(?:[ \t]+[A-Z][A-Za-z.]+(?!\d)){{0,2}}"  # the city
    rf"(?:,?[ \t]+[A-Z]{{2}}(?![\w]))?"  # the state
    rf"(?:,?[ \t]+(?:\d{{5}}(?:-\d{{4}})?|[A-Z]{{1,2}}\d[A-Z\d]?[ \t]?\d[A-Z]{{2}}))?)?")
_DE_ADDRESS = re.compile(
    r"\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer)[ \t]+\d{1,4}[a-z]?\b"
    r"(?:,[ \t]*\d{5}[ \t]+[A-ZÄÖÜ][\wäöüß-]+)?")
_FR_ADDRESS = re.compile(
    r"\b\d{1,4}(?:[ \t]?(?:bis|ter))?,?[ \t]+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai)"
    r"[ \t]+(?:(?:de la|de l'|du|des|de|d')[ \t]*)?[A-ZÉ][\w'-]+(?:[ \t]+[A-ZÉ][\w'-]+){0,3}"
    r"(?:,[ \t]*\d{5}[ \t]+[A-ZÉ][\w-]+)?")
_PO_BOX = re.compile(r"\b(?i:p\.?[ \t]?o\.?[ \t]+box)[ \t]+\d{1,6}\b(?:,[ \t]*[A-Z][A-Za-z]+(?!\d))?")
# Dutch "Keizersgracht 123, 1015 CJ Amsterdam"; Spanish, Italian, Portuguese "Calle Mayor 5".
_NL_ADDRESS = re.compile(
    r"\b[A-Z][a-z]+(?:gracht|straat|laan|plein|kade|singel|dijk)[ \t]+\d{1,4}[a-z]?\b"
    r"(?:,[ \t]*\d{4}[ \t]?[A-Z]{2}[ \t]+[A-Z][a-z]+)?")
_SOUTH_ADDRESS = re.compile(
    r"\b(?:Calle|Avenida|Plaza|Paseo|Carrer|Via|Viale|Piazza|Corso|Rua|Praça)[ \t]+"
    r"(?:(?:de la|del|de|di|da|do|dos)[ \t]+)?"
    r"[A-Z][\w'-]+(?:[ \t]+[A-Z][\w'-]+){0,2},?[ \t]+\d{1,4}[a-z]?\b(?:,[ \t]*\d{5}[ \t]+[A-Z][\w-]+)?")


@cache
def _gazetteer(name: str) -> frozenset[str]:
    text = resources.files("names").joinpath(name).read_text()
    return frozenset(line.split(None, 1)[0].lower() for line in text.splitlines() if line.strip())


@cache
def first_names() -> frozenset[str]:
    return _gazetteer("dist.male.first") | _gazetteer("dist.female.first")


def surnames() -> frozenset[str]:
    return _gazetteer("dist.all.last")


def _span(start: int, end: int, kind: str, text: str) -> Span:
    from bot.brain.pii import Span

    value = text[start:end]
    return Span(start, end, kind, value, " ".join(value.lower().split()))


def _gazetteer_name(words: list[str], cued: bool) -> int:
    """How many of `words` (capitalised, in a row) form a name; 0 if they do not."""
    first = words[0].lower()
    if first not in first_names():
        return 0
    if first in COMMON_WORDS and not (len(words) > 1 and words[1].lower() in surnames()
                                      and words[1].lower() not in COMMON_WORDS):
        return 0
    count = 1
    while count < min(len(words), 3) and (words[count].lower() in surnames() or cued):
        if words[count].lower() in COMMON_WORDS:
            break
        count += 1
    return count if cued or count > 1 else 0


def find_names(text: str) -> list[Span]:
    found: list[Span] = []
    for m in [*_STRONG.finditer(text), *_SIGNATURE.finditer(text)]:
        words = m.group(1).split()
        while words and words[-1].lower() in COMMON_WORDS:
            words.pop()
        if words and words[0].lower() not in COMMON_WORDS:
            found.append(_span(m.start(1), m.start(1) + len(" ".join(words)), "name", text))
    for m in _WORDS.finditer(text):
        if any(f.start <= m.start() < f.end for f in found):
            continue
        before = text[:m.start()]
        cued = bool(_WEAK_BEFORE.search(before[-30:]) or _SIGN_OFF.search(before[-40:]))
        words = [(w.start() + m.start(), w.end() + m.start(), w.group()) for w in _WORD.finditer(m.group())]
        # A sentence's first word is capitalised anyway: look at the words after it too.
        for skip in range(len(words)):
            count = _gazetteer_name([w for _, _, w in words[skip:]], cued and skip == 0)
            if count:
                found.append(_span(words[skip][0], words[skip + count - 1][1], "name", text))
                break
    return found


def find_addresses(text: str) -> list[Span]:
    patterns = (_US_ADDRESS, _DE_ADDRESS, _FR_ADDRESS, _NL_ADDRESS, _SOUTH_ADDRESS, _PO_BOX)
    return [_span(m.start(), m.end(), "address", text) for pattern in patterns for m in pattern.finditer(text)]
