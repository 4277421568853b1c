"""Which database, connections to it, and what a failure to reach it means.

One module per job, imports pointing down this list only:

- :mod:`~bridge.db.errors`: the exception classes every module here raises (one exit status
  each on the command line);
- :mod:`~bridge.db.masking`: masking passwords in URLs and messages (:func:`redact_url`,
  :func:`scrub`), so none is ever printed;
- :mod:`~bridge.db.failures`: what a psycopg failure means: could not connect (one line saying
  what to do), connection lost, or a shared table missing;
- :mod:`~bridge.db.embedded`: the embedded PostgreSQL (``pgserver``), never started unasked,
  kept running between commands until stopped;
- :mod:`~bridge.db.resolve`: which database, by one rule (``--database-url``/``--embedded``,
  then ``BRIDGE_DATABASE_URL``/``BRIDGE_EMBEDDED``, then ``DATABASE_URL``, else refuse);
- :mod:`~bridge.db.connections`: connecting (JSON read as Jason reads it), the lazy pool and
  the quoted schema prefix.

Everything public is re-exported here, so callers write ``from bridge.db import connect`` and
``db.scrub(...)`` without knowing which module holds it. The logger of every module is
``bridge.db`` (``-v`` raises it to INFO).
"""

from __future__ import annotations

from bridge.db.connections import (
    DEFAULT_PREFIX,
    LazyPool,
    configure_pool_connection,
    connect,
    connect_async,
    prefix_ident,
    quote_ident,
    read_json_as_jason,
)
from bridge.db.embedded import (
    DEFAULT_EMBEDDED_DIR,
    EMBEDDED_DIR_ENV,
    EMBEDDED_EXTRA,
    EmbeddedServer,
    embedded_dir,
    embedded_status,
    embedded_system_user,
    import_pgserver,
    start_embedded,
    stop_embedded,
)
from bridge.db.errors import (
    URL_SHAPE,
    DatabaseChoiceError,
    DatabaseConfigError,
    DatabaseUnreachableError,
    NoDatabaseError,
)
from bridge.db.failures import (
    connection_failure,
    is_connect_failure,
    is_connection_lost,
    missing_schema_object,
)
from bridge.db.masking import redact_url, scrub
from bridge.db.resolve import (
    EMBEDDED_ENV,
    URL_ENV_VARS,
    ResolvedDatabase,
    resolve_database_url,
    validate_url,
)

__all__ = [
    "DEFAULT_EMBEDDED_DIR",
    "DEFAULT_PREFIX",
    "EMBEDDED_DIR_ENV",
    "EMBEDDED_ENV",
    "EMBEDDED_EXTRA",
    "URL_ENV_VARS",
    "URL_SHAPE",
    "DatabaseChoiceError",
    "DatabaseConfigError",
    "DatabaseUnreachableError",
    "EmbeddedServer",
    "LazyPool",
    "NoDatabaseError",
    "ResolvedDatabase",
    "configure_pool_connection",
    "connect",
    "connect_async",
    "connection_failure",
    "embedded_dir",
    "embedded_status",
    "embedded_system_user",
    "import_pgserver",
    "is_connect_failure",
    "is_connection_lost",
    "missing_schema_object",
    "prefix_ident",
    "quote_ident",
    "read_json_as_jason",
    "redact_url",
    "resolve_database_url",
    "scrub",
    "start_embedded",
    "stop_embedded",
    "validate_url",
]
