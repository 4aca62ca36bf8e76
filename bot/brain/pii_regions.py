"""Phone regions for PII detection, kept apart so bot/config.py can validate them cheaply."""

from __future__ import annotations

import phonenumbers

# National formats of these regions are recognised by default: the US ("(415) 555-0132")
# and the UK ("020 7946 0958"). Any number written with "+" is recognised in every region.
DEFAULT_PHONE_REGIONS = ("US", "GB")


def phone_region(code: str) -> str:
    """A region code libphonenumber knows ("US", "DE"), upper-cased; anything else is an error."""
    region = code.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{code!r} is not a phone region (ISO 3166 alpha-2, e.g. US, GB, DE)")
    return region
