"""jvdb: the Python client of JadeVectorDB (standard library only).

    import jvdb
    client = jvdb.Client("http://127.0.0.1:8080", api_key=None)   # a `jvdb serve`
    db = jvdb.open("./jvdb-data")                                  # or libjvdb.so in this process

Both have the same methods: create_database, upsert, get, get_many, delete, count, scroll, search,
list_databases, drop_database; the Client also has backups, compaction and status.
"""
from .client import Client
from .embedded import Embedded, open
from .errors import (AlreadyExistsError, ConflictError, ForbiddenError, InvalidArgumentError, JvdbError,
                     NotFoundError, ServerBusyError, TransportError, UnauthorizedError, UnsupportedError)

__version__ = "0.1.0"
__all__ = ["Client", "Embedded", "open", "JvdbError", "InvalidArgumentError", "UnauthorizedError", "ForbiddenError",
           "NotFoundError", "ConflictError", "AlreadyExistsError", "ServerBusyError", "UnsupportedError",
           "TransportError"]
