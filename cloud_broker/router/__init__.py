"""The learned router: it runs on the broker itself (no hidden calls), predicting each
model's P(correct) for a prompt from the project's ONNX sentence encoder and a few prompt
features, trained by ``cloud-broker router train --outcomes FILE`` on judged outcomes."""

from __future__ import annotations

from .features import Featurizer, prompt_features
from .file import FORMAT, read_router_file, write_router_file
from .fit import auroc, fit_logistic
from .opener import DEFAULT_ENCODER, store_encoders
from .router import EncoderOpener, LearnedRouter
from .train import read_outcomes, train_router

__all__ = [
    "DEFAULT_ENCODER",
    "FORMAT",
    "EncoderOpener",
    "Featurizer",
    "LearnedRouter",
    "auroc",
    "fit_logistic",
    "prompt_features",
    "read_outcomes",
    "read_router_file",
    "store_encoders",
    "train_router",
    "write_router_file",
]
