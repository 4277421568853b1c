"""Errors of the external term format codec.

Recorded output comes out of a database row that anything may have written, so every way a
binary can be wrong has its own class, and each decode error carries the byte offset where the
decoder gave up: a caller can log *what* and *where* without parsing a message. All of them are
``ValueError`` subclasses so code that already guards a parse with ``except ValueError`` keeps
working.
"""

from __future__ import annotations


class TermError(ValueError):
    """Root of everything the term codec raises on bad input."""


class TermEncodeError(TermError):
    """A Python value has no external-term form (an unknown type, NaN, a cycle, ...)."""


class TermDecodeError(TermError):
    """The bytes are not a term this codec (or the VM) would accept."""

    def __init__(self, offset: int, problem: str) -> None:
        self.offset = offset
        self.problem = problem
        super().__init__(f"at byte {offset}: {problem}")


class TruncatedTermError(TermDecodeError):
    """The data ends inside a term."""


class DeclaredLengthError(TruncatedTermError):
    """A length or count field claims more than the bytes that remain.

    Raised before anything is allocated from that length, so a forged header cannot make the
    decoder reserve gigabytes.
    """


class VersionError(TermDecodeError):
    """The first byte is not the format version 131."""


class UnknownTagError(TermDecodeError):
    """A tag byte this codec does not know, or one not allowed where it stands."""


class AtomTooLongError(TermDecodeError):
    """An atom longer than the VM's limit of 255 characters."""


class AtomEncodingError(TermDecodeError):
    """The text of a UTF-8 atom is not valid UTF-8."""


class InvalidTermError(TermDecodeError):
    """A well-framed term with an impossible value (bad bit count, NaN, duplicate map key, ...)."""


class NestingTooDeepError(TermDecodeError):
    """Containers nest deeper than the configured bound."""


class CompressionError(TermDecodeError):
    """A compressed term (tag 80) whose zlib stream is broken."""


class InflatedSizeError(CompressionError):
    """A compressed term inflates to more or less than it declared, or past the allowed size."""


class TrailingDataError(TermDecodeError):
    """Bytes are left over after a complete term."""
