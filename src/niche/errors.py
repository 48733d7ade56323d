"""One exception tree for niche.

Every error niche raises on purpose is a :class:`NicheError`. Subclasses carry the context a
user needs to act (file, line, column, field, task, version) and the HTTP status the gateway
answers with. Foreign errors are mapped at the boundary with ``raise ... from exc``.

This module imports nothing from niche.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AlreadyExistsError",
    "ArtifactError",
    "AuthenticationError",
    "BudgetExceededError",
    "ChecksumMismatchError",
    "CircuitOpenError",
    "ConfigurationError",
    "ConflictError",
    "DataValidationError",
    "DatabaseError",
    "DatasetNotFoundError",
    "DownloadError",
    "EncoderError",
    "GateRefusedError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "NicheError",
    "NotEnoughDataError",
    "NotFittedError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestError",
    "RequestTimeoutError",
    "SpecialistError",
    "SpecialistTimeoutError",
    "TaskNotFoundError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "ValidationError",
]


class NicheError(Exception):
    """Root of every error niche raises on purpose.

    ``exit_code`` is what the CLI exits with; ``http_status`` is what the gateway answers.
    """

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(NicheError):
    """A setting or option has a value niche cannot use."""

    exit_code = 2
    http_status = 500

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class ValidationError(NicheError):
    """An argument a caller passed is not acceptable (a bad option, field or value).

    Raised for the caller's own values, not for the server's settings: the CLI exits with 2,
    the gateway answers 400 naming ``param``.
    """

    exit_code = 2
    http_status = 400

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotEnoughDataError(ValidationError):
    """Too few usable labelled rows to build a dataset version (e.g. distilled from traffic).

    ``rows`` is how many there are, ``needed`` how many it takes; the message says how to get
    more. The loop reads it as "nothing to do yet", not as a failure.
    """

    def __init__(self, message: str, *, task: str, rows: int, needed: int) -> None:
        super().__init__(message, param="min_rows")
        self.task = task
        self.rows = rows
        self.needed = needed


class DataValidationError(NicheError):
    """Input data is malformed. The message names the file, line and column.

    ``line`` is 1-based and counts physical lines of the file (the header is line 1 of a
    CSV); ``column`` is the column name or field the problem is in.
    """

    exit_code = 2
    http_status = 422

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class NotFoundError(NicheError):
    """Something named by the user does not exist."""

    exit_code = 2
    http_status = 404


class DatasetNotFoundError(NotFoundError):
    """A dataset name is not in the catalog, or its files cannot be found."""


class TaskNotFoundError(NotFoundError):
    """A task name is not in the registry. The message lists the known tasks."""

    def __init__(self, message: str, *, task: str) -> None:
        super().__init__(message)
        self.task = task


class ModelNotFoundError(NotFoundError):
    """A task has no model version (or alias) of that name. The message lists what exists."""

    def __init__(self, message: str, *, task: str, ref: int | str) -> None:
        super().__init__(message)
        self.task = task
        self.ref = ref


class AlreadyExistsError(NicheError):
    """Something the user asked to create exists already (e.g. a task of that name)."""

    exit_code = 2
    http_status = 409


class ConflictError(NicheError):
    """The registry changed under a compare-and-set: an alias no longer points where expected.

    Read the current state and decide again; retrying blindly would undo the other writer.
    """

    exit_code = 3
    http_status = 409

    def __init__(
        self,
        message: str,
        *,
        task: str | None = None,
        alias: str | None = None,
        expected: int | None = None,
        actual: int | None = None,
    ) -> None:
        super().__init__(message)
        self.task = task
        self.alias = alias
        self.expected = expected
        self.actual = actual


class GateRefusedError(NicheError):
    """A promotion was refused: the gate failed, or the version has no passed gate.

    ``checks`` names the failed checks. Exit code 4, apart from :class:`ConflictError`'s 3
    (someone else moved the alias), so a script can tell the two apart.
    """

    exit_code = 4
    http_status = 409

    def __init__(
        self,
        message: str,
        *,
        task: str | None = None,
        version: int | None = None,
        alias: str | None = None,
        checks: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.task = task
        self.version = version
        self.alias = alias
        self.checks = checks


class DatabaseError(NicheError):
    """The registry database cannot be reached or used. ``url`` has its password masked."""

    http_status = 503

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class DownloadError(NicheError):
    """A dataset or artifact could not be fetched."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ChecksumMismatchError(NicheError):
    """Bytes on disk or on the wire do not match the digest they were recorded with."""

    def __init__(self, what: str, *, expected: str, actual: str) -> None:
        super().__init__(
            f"{what}: sha256 mismatch (expected {expected}, got {actual}); "
            "the file is corrupt or was tampered with"
        )
        self.expected = expected
        self.actual = actual


class ArtifactError(NicheError):
    """A model artifact is missing, malformed or of a refused format (e.g. pickle)."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = str(path) if path is not None else None


class EncoderError(NicheError):
    """The text encoder could not be built, exported or loaded."""


class NotFittedError(NicheError):
    """A predictor was used before ``fit`` or ``load``."""


class RequestError(NicheError):
    """An HTTP request to the gateway is malformed. ``param`` names the offending field."""

    exit_code = 2
    http_status = 400

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class MethodNotAllowedError(RequestError):
    """The route exists, but not for this HTTP method."""

    http_status = 405


class PayloadTooLargeError(RequestError):
    """A request body is larger than the gateway accepts."""

    http_status = 413


class RequestTimeoutError(RequestError):
    """A client did not send its whole request in time (a slow or stalled body)."""

    http_status = 408


class AuthenticationError(NicheError):
    """No API key, or one that is unknown or revoked."""

    exit_code = 2
    http_status = 401


class PermissionDeniedError(NicheError):
    """The API key is valid but its scope does not allow this route."""

    exit_code = 2
    http_status = 403


class RateLimitError(NicheError):
    """Too many requests right now; retry after ``retry_after_s`` seconds."""

    http_status = 429

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OverloadedError(RateLimitError):
    """The gateway (or a task) is at its concurrency limit."""


class BudgetExceededError(RateLimitError):
    """An API key has spent its whole budget. Retrying does not help; raise the budget."""

    def __init__(self, message: str, *, key_id: int) -> None:
        super().__init__(message)
        self.key_id = key_id


class SpecialistError(NicheError):
    """A specialist failed to answer: it raised, or returned rows that are not one label and
    one confidence per input."""

    http_status = 500


class SpecialistTimeoutError(SpecialistError):
    """A specialist did not answer within ``NICHE_GATEWAY_SPECIALIST_TIMEOUT_S``."""

    http_status = 504


class UpstreamError(NicheError):
    """The general model's API failed, refused, or its circuit breaker is open."""

    http_status = 502

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamTimeoutError(UpstreamError):
    """The general model did not answer within the task's timeout."""

    http_status = 504


class CircuitOpenError(UpstreamError):
    """The general model failed too often lately; it is not called until its breaker resets
    (in about ``retry_after_s`` seconds: the gateway's 503 says so in ``Retry-After``)."""

    http_status = 503

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
