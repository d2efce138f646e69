"""Action parsing for one policy turn, and the feedback text appended after an invalid action.

The rollout engine stops generation at `</search>`, `</answer>` or EOS, so a new turn usually ends with a
closing tag, but nothing here assumes it. `parse_action` looks at the text generated in ONE turn and returns
the first complete action in it:

* `<search> query </search>` -> SEARCH with the stripped query;
* `<answer> text </answer>`  -> ANSWER with the stripped text;
* anything else -> INVALID with a short `reason` (for logs and for the feedback message).

Rules, and why:

* Text inside complete `<information>...</information>` spans never counts: a policy that imitates an
  observation must not be able to smuggle an action through it. An `<information>` that is never closed
  hides everything after it, for the same reason.
* The first opening tag decides. The next tag after it must be its own closing tag; another opening tag
  (nesting such as `<search> a <answer> b </answer> </search>`) or the other kind's closing tag is invalid,
  and so is an opening tag that is never closed. Closing tags that appear before any opening tag are
  ignored. Tags are exact and lowercase.
* `<think>...</think>` is not an action and is not stripped: an action written inside a think block still
  counts, as the engine has already stopped at its closing tag.
* The text of the tokenizer's special tokens (`special_tokens`, e.g. `<|im_start|>`) is removed from a
  query: a query is search text, and one that carried an end-of-turn or a role header into a simulator's chat
  prompt could rewrite that prompt (a policy steering its simulator into paying it).
* An empty or whitespace-only query is invalid (there is nothing to search), and so is a query longer than
  `max_query_chars` (a runaway generation, not a query).
* An empty answer `<answer></answer>` IS a valid answer with content "". The trajectory ends and the reward
  scores it 0. Treating it as invalid would instead hand the model another turn for free, which RL would
  learn to exploit as a way to stall.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

DEFAULT_MAX_QUERY_CHARS = 512

_INFORMATION_SPAN = re.compile(r"<information>.*?</information>", re.DOTALL)
_UNCLOSED_INFORMATION = re.compile(r"<information>.*\Z", re.DOTALL)
_ACTION_TAG = re.compile(r"<(/?)(search|answer)>")

_FEEDBACK_HEAD = "\nThat action was invalid"
_FEEDBACK_BODY = (
    ". To search, write your query as <search> query </search>. "
    "To give the final answer, write it as <answer> answer </answer>. Please try again.\n"
)


def _whitespace_tolerant(text: str) -> str:
    """A regex for `text` that accepts any run of whitespace between its words: a response decoded from
    token ids may not reproduce the exact spaces and newlines that were tokenized."""
    return r"\s+".join(re.escape(word) for word in text.split())


# Matches every feedback block this module produces, whatever its reason, so that the reward's answer
# extraction can skip the example `<answer> answer </answer>` the message itself contains.
_FEEDBACK_SPAN = re.compile(
    r"\s*"
    + _whitespace_tolerant(_FEEDBACK_HEAD)
    + r"(?:\s*\([^()\n]*\))?\s*"
    + _whitespace_tolerant(_FEEDBACK_BODY)
    + r"\s*"
)

INVALID_ACTION_MESSAGE = _FEEDBACK_HEAD + _FEEDBACK_BODY


class ActionKind(str, Enum):
    """What one turn asked for. A `str` subclass so it logs and compares as plain text."""

    SEARCH = "search"
    ANSWER = "answer"
    INVALID = "invalid"


SEARCH = ActionKind.SEARCH
ANSWER = ActionKind.ANSWER
INVALID = ActionKind.INVALID


@dataclass(frozen=True)
class Action:
    """The first action of a turn. `content` is the stripped query or answer ("" when invalid);
    `reason` says why an action is invalid ("" otherwise)."""

    kind: ActionKind
    content: str = ""
    reason: str = ""

    @property
    def is_search(self) -> bool:
        return self.kind is ActionKind.SEARCH

    @property
    def is_answer(self) -> bool:
        return self.kind is ActionKind.ANSWER

    @property
    def is_invalid(self) -> bool:
        return self.kind is ActionKind.INVALID


def _invalid(reason: str) -> Action:
    return Action(ActionKind.INVALID, "", reason)


def strip_injected_text(text: str) -> str:
    """Remove text the environment wrote rather than the policy: complete `<information>` spans (and an
    unclosed trailing one) and invalid-action feedback blocks. Shared by the parser and the reward."""
    text = _FEEDBACK_SPAN.sub(" ", text)
    text = _INFORMATION_SPAN.sub(" ", text)
    return _UNCLOSED_INFORMATION.sub(" ", text)


def parse_action(
    text: str, max_query_chars: int = DEFAULT_MAX_QUERY_CHARS, special_tokens: Sequence[str] = ()
) -> Action:
    """Return the first complete action in `text`, the text generated in one turn (see the module doc).
    special_tokens: texts removed from a query (the tokenizer's special tokens)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_action: text must be str, got {type(text).__name__}")
    if max_query_chars <= 0:
        raise ValueError(f"parse_action: max_query_chars must be positive, got {max_query_chars}")
    visible = strip_injected_text(text)
    opening = None
    for tag in _ACTION_TAG.finditer(visible):
        is_closing, name = tag.group(1) == "/", tag.group(2)
        if opening is None:
            if not is_closing:
                opening = tag
            continue
        if not is_closing:
            return _invalid(f"{name} tag nested inside {opening.group(2)} tag")
        if name != opening.group(2):
            return _invalid(f"{opening.group(2)} tag closed by {name} closing tag")
        content = visible[opening.end() : tag.start()]
        return _complete(opening.group(2), content, max_query_chars, special_tokens)
    if opening is not None:
        return _invalid(f"unclosed {opening.group(2)} tag")
    return _invalid("no search or answer action")


def _complete(name: str, content: str, max_query_chars: int, special_tokens: Sequence[str]) -> Action:
    if name == "answer":
        return Action(ActionKind.ANSWER, content.strip())
    cleaned = content
    for token in special_tokens:
        cleaned = cleaned.replace(token, " ")
    content = " ".join(cleaned.split()) if cleaned != content else content.strip()
    if not content:
        return _invalid("empty search query")
    if len(content) > max_query_chars:
        return _invalid(f"search query longer than {max_query_chars} characters")
    return Action(ActionKind.SEARCH, content)


def invalid_action_feedback(reason: str = "") -> str:
    """The text appended to a trajectory after an invalid action; names the reason when one is given.

    Parentheses and newlines are removed from the reason so every feedback block keeps one fixed shape,
    which `strip_injected_text` relies on.
    """
    reason = " ".join(re.sub(r"[()]", "", reason).split())
    if not reason:
        return INVALID_ACTION_MESSAGE
    return f"{_FEEDBACK_HEAD} ({reason}){_FEEDBACK_BODY}"
