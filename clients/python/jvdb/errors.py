"""Errors raised by the jvdb client (both the HTTP client and the embedded mode).

Every server error is `{"error": CODE, "message": TEXT}`; JvdbError carries both, plus the HTTP status
and, for a rejected batch, the position of the first bad vector.  The embedded mode raises the same
classes with the same codes, so code written against one works against the other.
"""
from typing import Dict, Optional, Type


class JvdbError(Exception):
    """An error answered by the server (or the library in embedded mode)."""

    def __init__(self, code: str, message: str, status: Optional[int] = None, index: Optional[int] = None):
        super().__init__("%s: %s" % (code, message) if status is None else "%s %s: %s" % (status, code, message))
        self.code = code
        self.message = message
        self.status = status
        self.index = index


class InvalidArgumentError(JvdbError, ValueError):
    """400: a field is missing, unknown, of the wrong type or out of range (INVALID_ARGUMENT, INVALID_JSON);
    also raised before sending what JSON cannot carry (NaN, infinities)."""


class UnauthorizedError(JvdbError):
    """401: no API key, or a wrong one."""


class ForbiddenError(JvdbError):
    """403: the key's role or databases do not allow the request."""


class NotFoundError(JvdbError):
    """404: no such database, vector or backup."""


class ConflictError(JvdbError):
    """409: ALREADY_EXISTS, BUSY or NO_BACKUP_REPOSITORY."""


class AlreadyExistsError(ConflictError):
    """409 ALREADY_EXISTS: creating or restoring onto a database that exists."""


class ServerBusyError(JvdbError):
    """503: SERVER_BUSY (retried by the client first) or SHUTTING_DOWN."""


class UnsupportedError(JvdbError):
    """The server has no such route (an older server): 404 "no route for ...", or 405 where the path
    is taken by another route (POST .../vectors/count reads as the vector named "count")."""


class TransportError(JvdbError):
    """The server could not be reached, or its answer was not the API's (connection refused, reset, timeout)."""


_BY_CODE: Dict[str, Type[JvdbError]] = {
    "INVALID_ARGUMENT": InvalidArgumentError, "INVALID_JSON": InvalidArgumentError,
    "BAD_REQUEST": InvalidArgumentError, "PAYLOAD_TOO_LARGE": InvalidArgumentError,
    "UNAUTHORIZED": UnauthorizedError, "FORBIDDEN": ForbiddenError,
    "NOT_FOUND": NotFoundError, "ALREADY_EXISTS": AlreadyExistsError,
    "BUSY": ConflictError, "NO_BACKUP_REPOSITORY": ConflictError,
    "SERVER_BUSY": ServerBusyError, "SHUTTING_DOWN": ServerBusyError,
}
_BY_STATUS: Dict[int, Type[JvdbError]] = {400: InvalidArgumentError, 401: UnauthorizedError, 403: ForbiddenError, 404: NotFoundError,
              409: ConflictError, 503: ServerBusyError}


def make_error(code: str, message: str, status: Optional[int] = None, index: Optional[int] = None) -> JvdbError:
    if (status == 404 and code == "NOT_FOUND" and message.startswith("no route for ")) or status == 405:
        return UnsupportedError(code, message, status, index)
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = _BY_STATUS.get(status or 0, JvdbError)
    return cls(code, message, status, index)
