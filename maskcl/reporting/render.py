"""One table model, two renderers: Markdown (for READMEs and issues) and LaTeX (booktabs, for papers).

A ``Table`` is columns plus sections (one per protocol or dataset), each holding row groups
(unsupervised, supervised upper bound, published ...). Groups are separated visibly in both
formats so a supervised or published row is never read as one of ours. Metric cells hold fractions
and are rendered as percentages with one decimal, ``mean ± std`` when there is a spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

__all__ = ["Code", "Rich", "Metric", "Column", "RowGroup", "Section", "Table", "fmt_pct", "latex_escape",
           "to_markdown", "to_latex", "tables_to_markdown", "tables_to_latex"]


@dataclass(frozen=True)
class Code:
    """An identifier (experiment, protocol, mask folder): monospace in both formats."""

    text: str


#: Mixed text: a sequence of plain strings and ``Code`` parts.
Rich = Tuple[Union[str, Code], ...]


@dataclass(frozen=True)
class Metric:
    """A fraction, optionally with a spread; ``None``/NaN renders as an empty cell (unknown)."""

    mean: Optional[float]
    std: Optional[float] = None


Cell = Union[str, Code, Rich, Metric, int, None]


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    align: str = "l"                # l, c, r, or a LaTeX paragraph column such as p{4cm}
    group: Optional[str] = None     # a spanning header above (e.g. a protocol in ablation tables)


@dataclass
class RowGroup:
    title: Optional[str]
    rows: List[dict] = field(default_factory=list)


@dataclass
class Section:
    heading: Optional[Rich] = None          # full description (Markdown heading)
    short: Optional[Rich] = None            # short heading for the LaTeX section row
    groups: List[RowGroup] = field(default_factory=list)

    def nonempty(self) -> List[RowGroup]:
        return [g for g in self.groups if g.rows]


@dataclass
class Table:
    title: str
    caption: Rich
    label: str
    columns: List[Column]
    sections: List[Section]
    notes: List[Rich] = field(default_factory=list)


def _finite(x: Optional[float]) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def fmt_pct(x: Optional[float]) -> str:
    """0.63912 → ``63.9``; None or NaN → empty."""
    return f"{100.0 * float(x):.1f}" if _finite(x) else ""


def _metric(m: Metric, pm: str) -> str:
    if not _finite(m.mean):
        return ""
    if _finite(m.std):
        return f"{fmt_pct(m.mean)}{pm}{fmt_pct(m.std)}"
    return fmt_pct(m.mean)


# ----------------------------------------------------------------------------------------- Markdown

def _md_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_").replace("\n", " ")


def _md(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, Metric):
        return _metric(cell, " ± ")
    if isinstance(cell, Code):
        return f"`{cell.text.replace('`', '')}`"
    if isinstance(cell, tuple):
        return "".join(_md(c) for c in cell)
    return _md_text(str(cell))


def to_markdown(table: Table, level: int = 2) -> str:
    """Markdown: a heading, the caption, one pipe table per section, then the notes."""
    h = "#" * level
    out = [f"{h} {_md_text(table.title)}", "", _md(table.caption), ""]
    headers = [(f"{c.group} {c.header}" if c.group else c.header) for c in table.columns]
    for sec in table.sections:
        nonempty = sec.nonempty()
        if not nonempty:
            continue
        if sec.heading is not None:
            out += [f"{h}# {_md(sec.heading)}", ""]
        out.append("| " + " | ".join(_md_text(x) for x in headers) + " |")
        out.append("|" + "|".join("---:" if c.align == "r" else ":---" for c in table.columns) + "|")
        for g in nonempty:
            if g.title:
                out.append("| " + " | ".join([f"**{_md_text(g.title)}**"] + [""] * (len(table.columns) - 1)) + " |")
            for r in g.rows:
                out.append("| " + " | ".join(_md(r.get(c.key)) for c in table.columns) + " |")
        out.append("")
    if table.notes:
        out += [f"- {_md(n)}" for n in table.notes] + [""]
    return "\n".join(out)


def tables_to_markdown(tables: Sequence[Table], title: str, intro: Rich = ()) -> str:
    parts = [f"# {_md_text(title)}", ""]
    if intro:
        parts += [_md(intro), ""]
    parts += [to_markdown(t) for t in tables]
    return "\n".join(parts).rstrip() + "\n"


# ------------------------------------------------------------------------------------------- LaTeX

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "---", "–": "--",
          "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(s: str) -> str:
    """Escape LaTeX specials (``_ & % $ # { } ~ ^ \\``) and map ± — – ≥ ≤ × to commands."""
    return "".join(_LATEX.get(ch, ch) for ch in str(s))


def _tex(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, Metric):
        return _metric(cell, r" $\pm$ ")
    if isinstance(cell, Code):
        return r"\texttt{" + latex_escape(cell.text) + "}"
    if isinstance(cell, tuple):
        return "".join(_tex(c) for c in cell)
    return latex_escape(str(cell))


def _spans(columns: Sequence[Column]) -> List[Tuple[Optional[str], int, int]]:
    """Runs of equal ``group`` as (group, first 1-based column, last)."""
    spans: List[Tuple[Optional[str], int, int]] = []
    for i, c in enumerate(columns, start=1):
        if spans and spans[-1][0] == c.group and c.group is not None:
            spans[-1] = (c.group, spans[-1][1], i)
        else:
            spans.append((c.group, i, i))
    return spans


def to_latex(table: Table) -> str:
    """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    ncol = len(table.columns)
    spec = "".join(c.align for c in table.columns)
    lines = [r"\begin{table}[tbp]", r"\centering", r"\small",
             r"\caption{" + _tex(table.caption) + "}", r"\label{" + latex_escape(table.label) + "}",
             r"\begin{tabular}{" + spec + "}", r"\toprule"]
    if any(c.group for c in table.columns):
        cells, rules = [], []
        for group, a, b in _spans(table.columns):
            if group is None:
                cells += [""] * (b - a + 1)
            else:
                cells.append(r"\multicolumn{" + str(b - a + 1) + "}{c}{" + latex_escape(group) + "}")
                rules.append(r"\cmidrule(lr){" + f"{a}-{b}" + "}")
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(c.header) for c in table.columns) + r" \\")
    for sec in table.sections:
        nonempty = sec.nonempty()
        if not nonempty:
            continue
        lines.append(r"\midrule")
        if sec.short is not None:
            lines.append(r"\multicolumn{" + str(ncol) + r"}{l}{\textbf{" + _tex(sec.short) + r"}} \\")
        for gi, g in enumerate(nonempty):
            if gi > 0:
                lines.append(r"\addlinespace")
            if g.title:
                lines.append(r"\multicolumn{" + str(ncol) + r"}{l}{\textit{" + latex_escape(g.title) + r"}} \\")
            for r in g.rows:
                lines.append(" & ".join(_tex(r.get(c.key)) for c in table.columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip")
        lines.append(r"\begin{minipage}{\linewidth}\footnotesize")
        lines += [_tex(n) + r"\par" for n in table.notes]
        lines.append(r"\end{minipage}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def tables_to_latex(tables: Sequence[Table], title: str) -> str:
    head = [f"% {latex_escape(title)}: generated by maskcl.reporting, do not edit by hand.",
            r"% Requires \usepackage{booktabs}; paste a table environment or \input{} this file."]
    return "\n".join(head) + "\n\n" + "\n".join(to_latex(t) for t in tables)
