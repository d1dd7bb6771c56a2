"""Small result tables rendered as Markdown and LaTeX from one cell grid.

A :class:`Table` is a header, an alignment per column and rows of :class:`Cell`; a cell
is a printed value, optionally in bold, followed by footnote markers (``†``, ``‡``, ``§``)
and an optional standard error (``0.2500 ± 0.0126``). The same grid gives the Markdown
table and the booktabs LaTeX tabular, so both always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MISSING = "---"
# Footnote markers and their LaTeX form (text mode).
LATEX_MARKS = {
    "†": r"\textsuperscript{\dag}",
    "‡": r"\textsuperscript{\ddag}",
    "§": r"\textsuperscript{\S}",
    "*": r"\textsuperscript{*}",
    "¶": r"\textsuperscript{\P}",
    "‖": r"\textsuperscript{\textbardbl}",
    "¤": r"\textsuperscript{\textcurrency}",
    "≈": r"\textsuperscript{$\approx$}",
}
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "→": r"$\rightarrow$",
    "×": r"$\times$",
    "±": r"$\pm$",
    "–": "--",
    "≥": r"$\geq$",
    "<": r"$<$",
    ">": r"$>$",
    "†": r"\dag{}",
    "‡": r"\ddag{}",
    "§": r"\S{}",
    "¶": r"\P{}",
    "‖": r"\textbardbl{}",
    "¤": r"\textcurrency{}",
}


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False
    marks: str = ""  # footnote markers printed right after the value
    stderr: str | None = None  # printed as "± stderr" after the markers

    def markdown(self) -> str:
        text = self.text.replace("|", r"\|")
        text = f"**{text}**" if self.bold and text != MISSING else text
        return text + self.marks + (f" ± {self.stderr}" if self.stderr is not None else "")

    def latex(self) -> str:
        text = latex_escape(self.text)
        text = rf"\textbf{{{text}}}" if self.bold and self.text != MISSING else text
        text += "".join(LATEX_MARKS.get(mark, latex_escape(mark)) for mark in self.marks)
        if self.stderr is not None:
            text += rf" {{\scriptsize $\pm$ {latex_escape(self.stderr)}}}"
        return text


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    align: str = ""  # one of "l"/"r" per column; default: first column left, the others right

    def __post_init__(self) -> None:
        self.align = self.align or "l" + "r" * (len(self.header) - 1)
        if len(self.align) != len(self.header):
            raise ValueError(f"{len(self.header)} columns but alignment {self.align!r}")

    def add(self, cells: Sequence[Cell | str]) -> None:
        row = [cell if isinstance(cell, Cell) else Cell(str(cell)) for cell in cells]
        if len(row) != len(self.header):
            raise ValueError(f"row has {len(row)} cells; the table has {len(self.header)} columns")
        self.rows.append(row)

    def markdown(self) -> str:
        rule = "|" + "|".join("---:" if side == "r" else "---" for side in self.align) + "|"
        lines = ["| " + " | ".join(self.header) + " |", rule]
        lines += ["| " + " | ".join(cell.markdown() for cell in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        lines = [
            rf"\begin{{tabular}}{{{self.align}}}",
            r"\toprule",
            " & ".join(latex_escape(title) for title in self.header) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(cell.latex() for cell in row) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    """``text`` safe for LaTeX text mode (special characters and a few symbols the tables use)."""
    return "".join(_LATEX_SPECIALS.get(character, character) for character in text)


def best_positions(values: Sequence[float | None], *, higher_is_better: bool, fmt: Callable[[float], str]) -> set[int]:
    """Positions holding the best value; ties on the printed value (``fmt``) are all best."""
    present = [value for value in values if value is not None]
    if not present:
        return set()
    printed = fmt(max(present) if higher_is_better else min(present))
    return {position for position, value in enumerate(values) if value is not None and fmt(value) == printed}
