"""Errors Ridgeline raises on purpose, and what each one means.

Every failure a user can cause or fix is one of these; anything else is a bug.
Each class carries an ``exit_code`` for the command line and a ``kind`` that the
broker's status-code interceptor and the CLI's JSON output use, so callers
never match on message strings::

    RidgelineError
    ├── ConfigError                 bad config file, environment variable or flag
    ├── InvalidRequestError         the request itself is malformed
    │   ├── EmptyPromptError
    │   └── PromptTooLongError      prompt does not fit the model's context
    ├── ModelError
    │   ├── UnknownModelError       no manifest has that name
    │   ├── ManifestError           a manifest is malformed or unsafe
    │   ├── ModelNotPulledError     known model, file not in the store
    │   ├── IntegrityError          stored file does not match its sha256
    │   ├── TemplateError           the chat template failed or was refused
    │   └── ModelLoadError          the runtime could not load the file
    ├── SourceError                 a pull could not fetch the model
    ├── StoreError                  the model store cannot be read or written
    ├── MissingDependencyError      an optional extra is not installed
    ├── UnauthenticatedError        missing, unknown or revoked device token
    ├── PermissionDeniedError       authenticated, but not allowed to do this
    ├── OverloadedError             try again later (``retry_after_s``)
    │   ├── RateLimitedError        the device's request or token budget is spent
    │   └── QueueFullError          every slot and queue place of the model is taken
    ├── UnavailableError            a backend or the broker cannot serve now
    ├── UnsupportedError            a valid request for something not offered
    └── RequestCancelledError       the caller cancelled the call
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EmptyPromptError",
    "IntegrityError",
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
    "SourceError",
    "StoreError",
    "TemplateError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnknownModelError",
    "UnsupportedError",
]


class RidgelineError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1
    kind = "error"
    # the gRPC status name when the error came from (or goes to) the broker
    status: str | None = None

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param  # the request field at fault, when there is one


class ConfigError(RidgelineError):
    exit_code = 2
    kind = "config"


class InvalidRequestError(RidgelineError):
    exit_code = 3
    kind = "invalid_request"


class EmptyPromptError(InvalidRequestError):
    kind = "empty_prompt"


class PromptTooLongError(InvalidRequestError):
    kind = "prompt_too_long"

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"prompt is {prompt_tokens} tokens but the model's context holds {context_length} "
            "(shorten the prompt, or raise n_ctx (edge: runtime.n_ctx, broker: llama_cpp.n_ctx) "
            "if the model was trained for more)"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class ModelError(RidgelineError):
    exit_code = 4
    kind = "model"


class UnknownModelError(ModelError):
    kind = "unknown_model"


class ManifestError(ModelError):
    kind = "bad_manifest"


class ModelNotPulledError(ModelError):
    exit_code = 5
    kind = "model_not_pulled"


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


class MissingDependencyError(RidgelineError):
    exit_code = 8
    kind = "missing_dependency"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'ridgeline[{extra}]'")
        self.module = module
        self.extra = extra


class UnauthenticatedError(RidgelineError):
    exit_code = 10
    kind = "unauthenticated"


class PermissionDeniedError(RidgelineError):
    exit_code = 10
    kind = "permission_denied"


class OverloadedError(RidgelineError):
    """The request was refused for now; ``retry_after_s`` says when to try again."""

    exit_code = 11
    kind = "overloaded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimitedError(OverloadedError):
    kind = "rate_limited"


class QueueFullError(OverloadedError):
    kind = "queue_full"


class UnavailableError(RidgelineError):
    exit_code = 12
    kind = "unavailable"


class UnsupportedError(RidgelineError):
    exit_code = 3
    kind = "unsupported"


class RequestCancelledError(RidgelineError):
    exit_code = 130
    kind = "cancelled"
