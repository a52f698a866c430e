"""What the table modules share: metric units, "mean ± std (n)" cells, and writing a table as
Markdown, LaTeX and CSV."""

from __future__ import annotations

import math
import os

import pandas as pd

# Metrics the suite records as fractions in [0, 1]; tables show them as percentages, like the papers.
FRACTION_MARKERS = ("accuracy", "f1", "exact_match", "rouge")
MB = 1e6  # memory.py's unit note: MB = 1e6 bytes, GiB = 2**30


def is_fraction(metric: str) -> bool:
    return any(marker in metric for marker in FRACTION_MARKERS)


def metric_label(metric: str) -> str:
    return f"{metric} (%)" if is_fraction(metric) else metric


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "perplexity" in metric


def scaled(values: pd.Series, metric: str) -> pd.Series:
    return values * 100 if is_fraction(metric) else values


def choose_metric(df: pd.DataFrame, metric: str) -> str:
    """`auto`: test accuracy where runs have it (classification), else test perplexity (causal LM)."""
    if metric != "auto":
        return metric
    for candidate in ("test_accuracy", "test_perplexity"):
        if f"metrics.{candidate}" in df and df[f"metrics.{candidate}"].notna().any():
            return candidate
    return "test_accuracy"


def summarize(df: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    """mean, std (sample, ddof=1; NaN for one seed) and n of `column` per group of `keys`."""
    grouped = df.groupby(keys, dropna=False, sort=True)[column]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def mean_std(mean: float, std: float, n: int, digits: int = 2, tex: bool = False) -> str:
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    pm = r" $\pm$ " if tex else " ± "
    spread = "" if std is None or (isinstance(std, float) and math.isnan(std)) else f"{pm}{std:.{digits}f}"
    return f"{mean:.{digits}f}{spread} (n={n})"


def tex_escape(text) -> str:
    text = str(text)
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("±", r"$\pm$"), ("×", r"$\times$")):
        text = text.replace(char, escaped)
    return text


def to_markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def to_latex(df: pd.DataFrame, caption: str) -> str:
    escaped = df.map(tex_escape).rename(columns=tex_escape)
    return escaped.to_latex(index=False, escape=False, caption=tex_escape(caption), column_format="l" * len(df.columns))


def write(df: pd.DataFrame, out_dir: str, name: str, caption: str, csv: pd.DataFrame | None = None) -> dict:
    """Write `<name>.md`, `<name>.tex` and `<name>.csv` (`csv`: numeric data when the display table
    holds formatted text); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in ("md", "tex", "csv")}
    with open(paths["md"], "w") as f:
        f.write(f"{caption}\n\n{to_markdown(df)}\n")
    with open(paths["tex"], "w") as f:
        f.write(to_latex(df, caption))
    (df if csv is None else csv).to_csv(paths["csv"], index=False)
    return paths


def setting_label(row: pd.Series, keys: list[str]) -> str:
    """`minilm-l6 / movie-sentences · targets=qv`: the parts of a cell's setting named by `keys`."""
    parts = []
    for key in keys:
        value = row[key]
        if key in ("model", "dataset"):
            parts.append(str(value))
        else:
            parts.append(f"{key.split('.')[-1]}={value}")
    return " · ".join(parts)


def save_figure(fig, path: str) -> str:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
