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
    └── MissingDependencyError      an optional extra is not installed
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
    "PromptTooLongError",
    "RidgelineError",
    "SourceError",
    "StoreError",
    "TemplateError",
    "UnknownModelError",
]


class RidgelineError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1
    kind = "error"


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
            "(shorten the prompt, or raise runtime.n_ctx if the model was trained for more)"
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
