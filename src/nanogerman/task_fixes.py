"""Corrected versions of installed lm-eval tasks, each under a name of its own (nothing is changed silently).

``arc_de_fixed``: lm-eval 0.4.13's multilingual ARC tasks (``okapi/arc_multilingual/utils.py``,
``arc_de`` among them) run every question and answer through HellaSwag's ``preprocess``:
it replaces `` [title]`` by ``". "`` and deletes every ``[…]`` span, clean-up meant for
WikiHow artefacts in HellaSwag (lm-eval issue 2000). ARC text has no such artefacts but
does use brackets (units, formulas, glosses), which vanish from the prompt and the choices.
:func:`arc_process_docs` builds the same documents (``query``, ``choices``, ``gold``) with
whitespace stripped only; the task is the installed ``arc_de`` in every other respect.
"""

from __future__ import annotations

FIXED_TASKS = {"arc_de_fixed": "arc_de"}  # corrected task: the installed task it corrects
PROCESS_DOCS = {"arc_de_fixed": "nanogerman.task_fixes.arc_process_docs"}  # its process_docs, for lm-eval's !function
LETTERS = ("A", "B", "C", "D", "E")


def arc_document(doc: dict) -> dict:
    """One m_arc row as lm-eval's ``arc_de`` shapes it, without HellaSwag's bracket removal."""
    options = [doc[f"option_{letter.lower()}"] for letter in LETTERS]
    return {
        "id": doc["id"],
        "query": "Question: " + doc["instruction"].strip() + "\nAnswer:",
        "choices": [option.strip() for option in options if option],
        "gold": LETTERS.index(doc["answer"]),
    }


def arc_process_docs(dataset):
    """lm-eval's ``process_docs`` hook: :func:`arc_document` on every row of a ``datasets.Dataset``."""
    return dataset.map(arc_document)
