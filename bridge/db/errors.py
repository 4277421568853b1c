"""What can go wrong choosing or reaching the database, as exception classes.

Resolving, connecting and starting the embedded server each raise these, and the command line
maps each class to one exit status (``bridge.cli.output``); they live apart so that every
module of the package can raise them without importing another's logic. ``URL_SHAPE`` is here
for the same reason: both a malformed URL found when resolving and one found when connecting
end their message with it.
"""

from __future__ import annotations

URL_SHAPE = "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"


class DatabaseConfigError(RuntimeError):
    """The database could not be resolved or reached; the message never holds a password."""


class NoDatabaseError(DatabaseConfigError):
    """No database given, a malformed URL, or the embedded server asked for but not installed."""


class DatabaseChoiceError(DatabaseConfigError):
    """Two ways of choosing the database at the same level: refusing beats guessing."""


class DatabaseUnreachableError(DatabaseConfigError):
    """Connecting failed (nothing listening, unknown host, timeout, authentication, unknown
    database or role), or the embedded server did not start."""
