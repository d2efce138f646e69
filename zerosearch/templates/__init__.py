"""Prompt templates as data files, and their rendering.

Files in this package (selectable by bare name, e.g. "policy_default"):

* ``policy_default.txt``  the policy instruction: think / search / information / answer tags, then
  ``Question: {question}``. Sent as one user message.
* simulation prompts, in *sets* of four files ``<set>_<mode>_<label>.txt``: mode ``sft`` (a fine-tuned
  simulation LLM) or ``prompt`` (a plain instruct model, given one worked example of five documents), label
  ``useful`` or ``noisy``:

  - ``reference`` (the default): byte for byte the prompts the publicly released simulation LLMs were tuned
    on, an interface kept as data with its source quoted in each file (docs/design.md §3);
  - ``project``: the project's own wording in the same layout (the toy world's simulator is tuned on it).

A path can be given instead of a name, so a user can drop in the exact template a checkpoint was trained
with; for a simulation set, a path with ``{mode}`` and/or ``{label}`` in it names one file per case (e.g.
``my/sim_{mode}_{label}.txt``). A template file may open with a front-matter block (``---`` on the first line,
notes, ``---``), which is not part of the text. Placeholders are ``{question}``, ``{answer}`` and ``{query}``.
Rendering replaces exactly these, in one pass: other braces are left alone, and a question that itself
contains "{" or "{query}" is inserted verbatim (str.format would fail on the first and substitute the second).
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from pathlib import Path

PLACEHOLDERS = ("question", "answer", "query")
MODES = ("sft", "prompt")
LABELS = ("useful", "noisy")
DEFAULT_SIMULATION_TEMPLATE = "reference"
FRONT_MATTER = "---\n"
ANSWER_MODES = ("first", "all")
# How answer_mode="all" lists several golden answers in the "whose answer is ..." line.
ANSWER_SEPARATOR = ", "

_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def available_templates() -> list[str]:
    """Bare names of the templates shipped in this package."""
    files = resources.files(__name__).iterdir()
    return sorted(item.name[: -len(".txt")] for item in files if item.name.endswith(".txt"))


def _is_path(name_or_path: str | os.PathLike) -> bool:
    text = str(name_or_path)
    return isinstance(name_or_path, os.PathLike) or os.sep in text or "/" in text or text.endswith(".txt")


def strip_front_matter(text: str) -> str:
    """The template text without its opening ``---`` ... ``---`` notes block (when it has one)."""
    if not text.startswith(FRONT_MATTER):
        return text
    end = text.find("\n" + FRONT_MATTER, len(FRONT_MATTER) - 1)
    return text if end < 0 else text[end + 1 + len(FRONT_MATTER) :]


def load_template(name_or_path: str | os.PathLike) -> str:
    """The text of a template: a bare name from this package, or a path to a file (its exact content after
    any front-matter block)."""
    if _is_path(name_or_path):
        path = Path(str(name_or_path)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"template file not found: {path}")
        return strip_front_matter(path.read_text(encoding="utf-8"))
    return _packaged_template(str(name_or_path))


@functools.cache
def _packaged_template(name: str) -> str:
    """Packaged templates never change while running; caching them keeps dataset builds (tens of thousands of
    renders) from re-reading the file each time. User files are read fresh on every call."""
    resource = resources.files(__name__) / f"{name}.txt"
    if not resource.is_file():
        raise FileNotFoundError(
            f"unknown template {name!r}; available: {', '.join(available_templates())} (or pass a file path)"
        )
    return strip_front_matter(resource.read_text(encoding="utf-8"))


def render(template_text: str, **values: str) -> str:
    """Fill the known placeholders present in `template_text`, in one pass (see the module doc).

    A placeholder in the template without a value is an error naming it, so a template that needs an
    answer cannot be rendered silently without one.
    """
    missing = sorted({name for name in _PLACEHOLDER.findall(template_text) if name not in values})
    if missing:
        raise ValueError(f"template needs a value for {', '.join('{' + m + '}' for m in missing)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template_text)


def _require_placeholder(template_text: str, name: str, template: str | os.PathLike) -> None:
    if "{" + name + "}" not in template_text:
        raise ValueError(f"template {str(template)!r} has no {{{name}}} placeholder")


def render_policy_prompt(question: str, template: str | os.PathLike = "policy_default") -> str:
    """The policy's instruction with the question filled in."""
    text = load_template(template)
    _require_placeholder(text, "question", template)
    return render(text, question=question.strip())


def policy_messages(question: str, template: str | os.PathLike = "policy_default") -> list[dict[str, str]]:
    """The dataset's `prompt` column for one question: a single user message."""
    return [{"role": "user", "content": render_policy_prompt(question, template)}]


def _answer_text(golden_answers, answer_mode: str) -> str | None:
    """The answer that goes into the simulation prompt, or None when there is none to give."""
    if answer_mode not in ANSWER_MODES:
        raise ValueError(f"answer_mode must be one of {', '.join(ANSWER_MODES)}, got {answer_mode!r}")
    answers = [golden_answers] if isinstance(golden_answers, str) else list(golden_answers)
    answers = [str(answer).strip() for answer in answers if str(answer).strip()]
    if not answers:
        return None
    return answers[0] if answer_mode == "first" else ANSWER_SEPARATOR.join(answers)


def simulation_template(template: str | os.PathLike, mode: str, useful: bool) -> str | os.PathLike:
    """The file of one case of a simulation template set: `<set>_<mode>_<label>` for a set name, the path
    with `{mode}` / `{label}` filled in for a path (a path without them is one file for every case)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    label = LABELS[0] if useful else LABELS[1]
    if _is_path(template):
        return str(template).replace("{mode}", mode).replace("{label}", label)
    return f"{template}_{mode}_{label}"


def check_simulation_template(template: str | os.PathLike, mode: str) -> None:
    """Fail now, naming the file, when the set lacks a case `mode` needs or a case lacks {query}."""
    for useful in (True, False):
        name = simulation_template(template, mode, useful)
        _require_placeholder(load_template(name), "query", name)


def render_simulation_prompt(
    query: str,
    question: str,
    golden_answers,
    useful: bool,
    mode: str = "sft",
    answer_mode: str = "first",
    template: str | os.PathLike = DEFAULT_SIMULATION_TEMPLATE,
) -> str:
    """The user message for the simulation LLM.

    `mode` "sft" (fine-tuned simulator) or "prompt" (plain instruct model) and `useful` pick the case of the
    template set `template` (see the module doc). `answer_mode` "first" puts the first golden answer in the
    prompt; "all" lists every golden answer joined by ", ". Golden answers may be empty only when the
    template has no {answer} placeholder.
    """
    if not query.strip():
        raise ValueError("simulation prompt: the search query is empty")
    name = simulation_template(template, mode, useful)
    text = load_template(name)
    _require_placeholder(text, "query", name)
    values = {"query": query.strip(), "question": question.strip()}
    answer = _answer_text(golden_answers, answer_mode)
    if answer is not None:
        values["answer"] = answer
    elif "{answer}" in text:
        raise ValueError(f"template {str(name)!r} needs a golden answer, but golden_answers is empty")
    return render(text, **values)


def simulation_messages(
    query: str,
    question: str,
    golden_answers,
    useful: bool,
    mode: str = "sft",
    answer_mode: str = "first",
    template: str | os.PathLike = DEFAULT_SIMULATION_TEMPLATE,
) -> list[dict[str, str]]:
    """Chat messages for the simulation LLM: an empty system message, then the prompt as the user message."""
    prompt = render_simulation_prompt(query, question, golden_answers, useful, mode, answer_mode, template)
    return [{"role": "system", "content": ""}, {"role": "user", "content": prompt}]
