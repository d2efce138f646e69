"""What the environment writes into a trajectory after a search: the `<information>` block, as token ids.

Layout (docs/design.md §3): "\\n\\n<information>" + one line "Doc i: text" per document + "</information>\\n\\n".
The block is tokenized in three pieces: the fixed head and tail once, when the formatter is made, and the
documents once per observation. Tokenizing the pieces separately is what lets a long observation be cut to
`max_obs_length` tokens inside the documents while the closing tag survives whole: a truncated observation
still closes its `<information>` span, so the parser and the reward keep treating what follows as policy
text. The ids built here are the ids the policy is conditioned on; nothing is decoded and re-encoded later.

Documents are untrusted text (a search engine, or a simulator, writes them): they are tokenized with the
tokenizer's special tokens split into ordinary pieces, so a document holding `<|im_end|>` or any other special
token's text reads as that text and can never become the special token itself (an end of turn, a role
header) inside the observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OBSERVATION_HEAD = "\n\n<information>"
OBSERVATION_TAIL = "</information>\n\n"


def format_documents(documents: Sequence[str]) -> str:
    """One line per document, "Doc 1: ..." to "Doc k: ...". Whitespace inside a document (newlines
    included) is collapsed so that each document stays on its own line."""
    return "".join(f"Doc {i}: {' '.join(doc.split())}\n" for i, doc in enumerate(documents, start=1))


@dataclass(frozen=True)
class Observation:
    """The token ids of one observation, and whether its documents were cut to fit."""

    token_ids: list[int]
    truncated: bool


class ObservationFormatter:
    """Builds observation token ids with a fixed tokenizer and token limit.

    max_obs_length: the most tokens one observation may take, head and closing tag included; it must leave
    room for at least one document token.
    """

    def __init__(self, tokenizer, max_obs_length: int):
        self.tokenizer = tokenizer
        self.head_ids = self._encode(OBSERVATION_HEAD)
        self.tail_ids = self._encode(OBSERVATION_TAIL)
        self.max_obs_length = max_obs_length
        self.room = max_obs_length - len(self.head_ids) - len(self.tail_ids)
        if self.room < 1:
            raise ValueError(
                f"max_obs_length={max_obs_length} leaves no room for documents: the <information> head and "
                f"closing tail alone take {len(self.head_ids) + len(self.tail_ids)} tokens"
            )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        """Token ids of environment text (feedback messages), without special tokens added."""
        return self._encode(text)

    def build(self, documents: Sequence[str]) -> Observation:
        text = format_documents(documents)
        doc_ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        truncated = len(doc_ids) > self.room
        return Observation(self.head_ids + doc_ids[: self.room] + self.tail_ids, truncated)
