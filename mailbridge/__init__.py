"""Deskhand's mail bridge: SMTP/IMAP in, parsing and threading, replies out (see README.md)."""
