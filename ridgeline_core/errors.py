"""Errors Ridgeline raises on purpose, and what each one means.

Every failure a user can cause or fix is one of these; anything else is a bug.
Each class carries what every edge needs to report it, so callers never match on message
strings and the broker, the edge daemon and the clients agree: an ``exit_code`` for the
command line, a ``kind`` (the CLI's JSON output, the trailing metadata that brings the
class back across gRPC), its ``grpc_status`` (a ``grpc.StatusCode`` name) and its
``http_status``. One translation pair, :mod:`ridgeline_core.status`, turns an error into
a gRPC status and back. Every class takes the same constructor:
``Error(message, *, param=None, retry_after_s=None)`` (``param``: the request field at
fault; ``OverloadedError`` also takes ``retry_after_s`` second, positionally)::

    RidgelineError
                                                            gRPC status          HTTP
    RidgelineError                                          INTERNAL             500
    ├── ConfigError                 bad config file, environment variable or flag
    ├── InvalidRequestError         the request is malformed INVALID_ARGUMENT     400
    │   ├── EmptyPromptError
    │   └── PromptTooLongError      prompt does not fit the model's context
    ├── ModelError                                          INTERNAL             500
    │   ├── UnknownModelError       no manifest has that name NOT_FOUND          404
    │   │   └── UnknownStrategyError no configured strategy has that name
    │   ├── ManifestError           a manifest is malformed or unsafe
    │   │   └── InvalidModelNameError a name that can be no model's (a path) INVALID_ARGUMENT 400
    │   ├── ModelNotPulledError     known model, not stored FAILED_PRECONDITION  404
    │   ├── IntegrityError          stored file does not match its sha256
    │   ├── TemplateError           the chat template failed or was refused
    │   └── ModelLoadError          the runtime could not load the file
    ├── SourceError                 a pull could not fetch the model
    ├── StoreError                  the model store cannot be read or written
    ├── UnknownCollectionError      no knowledge collection has that name NOT_FOUND 404
    ├── MissingDependencyError      an optional extra is not installed
    ├── UnauthenticatedError        missing, unknown or revoked token UNAUTHENTICATED 401
    ├── PermissionDeniedError       authenticated, not allowed PERMISSION_DENIED 403
    ├── OverloadedError             try again later  RESOURCE_EXHAUSTED         503
    │   ├── RateLimitedError        the device's request or token budget is spent
    │   └── QueueFullError          every slot and queue place of the model is taken
    ├── UnavailableError            the broker or a backend cannot serve UNAVAILABLE 503
    ├── UnsupportedError            valid, but not offered  UNIMPLEMENTED         400
    ├── CostLimitError              max_cost is below any member's cost FAILED_PRECONDITION 402
    ├── RequestCancelledError       the caller cancelled    CANCELLED            499
    └── SlowClientError             the caller stopped reading DEADLINE_EXCEEDED  408
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CostLimitError",
    "EmptyPromptError",
    "IntegrityError",
    "InvalidModelNameError",
    "InvalidRequestError",
    "ManifestError",
    "MissingDependencyError",
    "ModelError",
    "ModelLoadError",
    "ModelNotPulledError",
    "OverloadedError",
    "PermissionDeniedError",
    "PromptTooLongError",
    "QueueFullError",
    "RateLimitedError",
    "RequestCancelledError",
    "RidgelineError",
    "SlowClientError",
    "SourceError",
    "StoreError",
    "TemplateError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnknownCollectionError",
    "UnknownModelError",
    "UnknownStrategyError",
    "UnsupportedError",
]


class RidgelineError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1
    kind = "error"
    grpc_status = "INTERNAL"  # a grpc.StatusCode name (this module does not import grpc)
    http_status = 500
    # the gRPC status name the error came with, when it came over gRPC (from_rpc)
    status: str | None = None

    def __init__(
        self, message: str = "", *, param: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.param = param  # the request field at fault, when there is one
        self.retry_after_s = retry_after_s  # when trying again may work


class ConfigError(RidgelineError):
    exit_code = 2
    kind = "config"


class InvalidRequestError(RidgelineError):
    exit_code = 3
    kind = "invalid_request"
    grpc_status = "INVALID_ARGUMENT"
    http_status = 400


class EmptyPromptError(InvalidRequestError):
    kind = "empty_prompt"


class PromptTooLongError(InvalidRequestError):
    kind = "prompt_too_long"

    @classmethod
    def for_prompt(cls, prompt_tokens: int, context_length: int) -> PromptTooLongError:
        error = cls(
            f"prompt is {prompt_tokens} tokens but the model's context holds {context_length} "
            "(shorten the prompt, or raise n_ctx (edge: runtime.n_ctx, broker: llama_cpp.n_ctx) "
            "if the model was trained for more)"
        )
        error.prompt_tokens, error.context_length = prompt_tokens, context_length
        return error

    prompt_tokens: int | None = None
    context_length: int | None = None


class ModelError(RidgelineError):
    exit_code = 4
    kind = "model"


class UnknownModelError(ModelError):
    kind = "unknown_model"
    grpc_status = "NOT_FOUND"
    http_status = 404


class UnknownStrategyError(UnknownModelError):
    """A request named a strategy the broker does not have configured."""

    kind = "unknown_strategy"


class ManifestError(ModelError):
    kind = "bad_manifest"


class InvalidModelNameError(ManifestError):
    """A model name no manifest may have (``../x``): in a manifest the manifest is bad, in
    a request the request is."""

    kind = "invalid_model_name"
    grpc_status = "INVALID_ARGUMENT"
    http_status = 400


class ModelNotPulledError(ModelError):
    exit_code = 5
    kind = "model_not_pulled"
    grpc_status = "FAILED_PRECONDITION"  # known, but not in the store: pull it first
    http_status = 404  # OpenAI clients read "model not found"


class IntegrityError(ModelError):
    exit_code = 6
    kind = "integrity"


class TemplateError(ModelError):
    kind = "template"


class ModelLoadError(ModelError):
    kind = "model_load"


class SourceError(RidgelineError):
    exit_code = 7
    kind = "source"


class StoreError(RidgelineError):
    exit_code = 9
    kind = "store"


class UnknownCollectionError(RidgelineError):
    """A request or command names a knowledge collection that was never added."""

    exit_code = 4
    kind = "unknown_collection"
    grpc_status = "NOT_FOUND"
    http_status = 404


class MissingDependencyError(RidgelineError):
    exit_code = 8
    kind = "missing_dependency"

    @classmethod
    def for_module(cls, module: str, extra: str) -> MissingDependencyError:
        error = cls(f"{module} is not installed: pip install 'ridgeline[{extra}]'")
        error.module, error.extra = module, extra
        return error

    module: str | None = None
    extra: str | None = None


class UnauthenticatedError(RidgelineError):
    exit_code = 10
    kind = "unauthenticated"
    grpc_status = "UNAUTHENTICATED"
    http_status = 401


class PermissionDeniedError(RidgelineError):
    exit_code = 10
    kind = "permission_denied"
    grpc_status = "PERMISSION_DENIED"
    http_status = 403


class OverloadedError(RidgelineError):
    """The request was refused for now; ``retry_after_s`` says when to try again."""

    exit_code = 11
    kind = "overloaded"
    grpc_status = "RESOURCE_EXHAUSTED"
    http_status = 503
    retry_after_s: float

    def __init__(
        self, message: str = "", retry_after_s: float | None = 1.0, *, param: str | None = None
    ) -> None:
        super().__init__(
            message, param=param, retry_after_s=1.0 if retry_after_s is None else retry_after_s
        )


class RateLimitedError(OverloadedError):
    kind = "rate_limited"


class QueueFullError(OverloadedError):
    kind = "queue_full"


class UnavailableError(RidgelineError):
    exit_code = 12
    kind = "unavailable"
    grpc_status = "UNAVAILABLE"
    http_status = 503


class UnsupportedError(RidgelineError):
    exit_code = 3
    kind = "unsupported"
    grpc_status = "UNIMPLEMENTED"  # the broker and the edge daemon alike
    http_status = 400  # OpenAI's answer to a parameter it does not offer


class CostLimitError(RidgelineError):
    """The request's ``max_cost`` does not cover what the strategy would have to spend."""

    exit_code = 13
    kind = "cost_limit"
    grpc_status = "FAILED_PRECONDITION"
    http_status = 402


class RequestCancelledError(RidgelineError):
    exit_code = 130
    kind = "cancelled"
    grpc_status = "CANCELLED"
    http_status = 499


class SlowClientError(RidgelineError):
    """The caller read nothing of a stream for longer than the server waits (a stalled or
    hostile client): the server stopped the work and freed what it held for the call."""

    kind = "slow_client"
    grpc_status = "DEADLINE_EXCEEDED"  # a time bound passed; not overload (no retry hint)
    http_status = 408
