"""The export's logits check: MaxText's logits and transformers' for the same token ids must agree.

The token ids are the German :data:`CHECK_TEXTS` (BOS first, as in training) and one row of
seeded random ids over the whole vocabulary; MaxText's logits come from the child process
:mod:`nanogerman.maxtext_logits` (see :mod:`nanogerman.export`).
"""

from __future__ import annotations

from pathlib import Path

from nanogerman.errors import StageError

DEFAULT_TOLERANCE = 1e-3
# German text for the check's token ids (plus one row of seeded random ids over the whole vocabulary).
CHECK_TEXTS = (
    "Die Stadt liegt am Ufer eines breiten Flusses. Im Sommer fahren Ausflugsschiffe bis zur alten Brücke, "
    "und am Abend sitzen die Leute auf den Treppen am Wasser.",
    "Sehr geehrte Damen und Herren, hiermit bestätigen wir den Eingang Ihres Antrags vom 3. März. "
    "Über das Ergebnis der Prüfung informieren wir Sie schriftlich, spätestens in vier Wochen.",
)


class ExportError(StageError):
    """A run cannot be exported, or its export fails the logits check."""


def check_ids(tokenizer_dir: str | Path, vocab_size: int, length: int, *, seed: int = 0):
    """Token ids for the check: the German check texts (BOS first, as in training) and one random row."""
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    rows = []
    for text in CHECK_TEXTS:
        ids = tokenizer.encode(text).ids
        while len(ids) < length:
            ids = ids + tokenizer.encode(text).ids
        rows.append(ids[:length])
    rows.append(np.random.default_rng(seed).integers(0, vocab_size, size=length).tolist())
    return np.asarray(rows, dtype=np.int32)


def hf_logits(folder: str | Path, ids):
    """transformers' logits (float32, CPU) for ``ids`` from the exported folder."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(np.asarray(ids), dtype=torch.long)).logits
    return logits.float().numpy()


def compare_logits(reference, candidate) -> dict:
    """max and mean |difference|, and how often the two agree on the most likely next token."""
    import numpy as np

    reference, candidate = np.asarray(reference, dtype=np.float32), np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        return {
            "shape_maxtext": list(reference.shape),
            "shape_transformers": list(candidate.shape),
            "max_abs_diff": float("inf"),
            "mean_abs_diff": float("inf"),
            "argmax_agreement": 0.0,
        }
    difference = np.abs(reference - candidate)
    finite = bool(np.isfinite(difference).all())
    return {
        "shape": list(reference.shape),
        "max_abs_diff": float(difference.max()) if finite else float("inf"),
        "mean_abs_diff": float(difference.mean()) if finite else float("inf"),
        "max_abs_logit": float(np.abs(reference).max()),
        "argmax_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
    }


def verify_export(folder: str | Path, maxtext_logits, ids, *, tolerance: float = DEFAULT_TOLERANCE, run: str = "?") -> dict:
    """Compare transformers' logits for ``ids`` with MaxText's; raise :class:`ExportError` beyond ``tolerance``."""
    figures = compare_logits(maxtext_logits, hf_logits(folder, ids))
    figures["tolerance"] = tolerance
    figures["passed"] = bool(figures["max_abs_diff"] < tolerance)
    if not figures["passed"]:
        shape = "" if "shape" in figures else f" (logits shapes {figures['shape_maxtext']} vs {figures['shape_transformers']})"
        raise ExportError(
            f"run {run}: the export fails the logits check: max |logit difference| between MaxText and transformers is "
            f"{figures['max_abs_diff']:.3g} (tolerance {tolerance:g}){shape}; the weight mapping does not fit this model"
        )
    return figures
