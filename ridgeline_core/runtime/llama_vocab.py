"""A llama.cpp model's vocabulary: tokenize, token pieces (cached), control tokens."""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["LlamaVocab"]


class LlamaVocab:
    def __init__(self, lib: Any, llm: Any) -> None:
        self._lib, self._llm = lib, llm
        self.handle = llm._model.vocab
        self.size = int(llm.n_vocab())
        self._pieces: dict[int, bytes] = {}
        self.bos_text = self.token_text(llm.token_bos())
        self.eos_text = self.token_text(llm.token_eos())

    def tokenize(self, text: str, add_special: bool, control: bool = True) -> list[int]:
        """Tokens of ``text``; with ``control`` the text of a control token (``<|im_end|>``)
        becomes that token, without it stays those characters."""
        encoded = text.encode("utf-8")
        return list(self._llm.tokenize(encoded, add_bos=add_special, special=control))

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._llm._model.token_get_text(token))

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (a partial character for some)."""
        piece = self._pieces.get(token)
        if piece is None:
            size = 64
            while True:
                buffer = ctypes.create_string_buffer(size)
                n = self._lib.llama_token_to_piece(self.handle, token, buffer, size, 0, False)
                if n >= 0:
                    piece = buffer.raw[:n]
                    break
                size = -n
            self._pieces[token] = piece
        return piece

    def control_count(self, tokens: list[int]) -> int:
        attr = self._lib.llama_vocab_get_attr
        control = self._lib.LLAMA_TOKEN_ATTR_CONTROL
        return sum(1 for token in tokens if attr(self.handle, token) & control)

    def has_control_text(self, text: str) -> bool:
        """Whether ``text`` contains the text of a control token (``<|im_end|>``)."""
        encoded = text.encode("utf-8")
        tokenize = self._llm.tokenize
        return bool(
            tokenize(encoded, add_bos=False, special=True)
            != tokenize(encoded, add_bos=False, special=False)
        )
