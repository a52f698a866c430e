"""Runs grouped into cells (model, dataset, method, rank, and any setting that differs), each cell's
learning rate chosen on validation (lab.selection), and its test score over the runs that learned.

A cell that ran one learning rate has nothing to choose: its runs are taken as they are, and the
table says the rate was not tuned. A cell that ran several gets the chosen rate, its grid edge (if
the choice sits on one) and the runs at it; collapsed runs are listed, never averaged.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import pandas as pd

from analysis import stats
from analysis.collect import CELL, hashable, split_keys
from lab import selection
from lab.rows import file_sha256, read_rows

# The place in every table and figure of the methods the suite's first tables were drawn with, and
# their colours; any other method (its label comes from its method file, through the record) follows
# them by name, in a colour of its own from one fixed palette (method_colour).
METHOD_ORDER = ("full", "lora", "qlora", "dora", "qlora+dora")
METHOD_COLOURS = {"full": "#222222", "lora": "#1f77b4", "qlora": "#ff7f0e", "dora": "#2ca02c",
                  "qlora+dora": "#d62728"}
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78",
                 "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")


def method_colour(method: str) -> str:
    """A method's colour, the same in every figure of every report (a stable hash of its name)."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return OTHER_COLOURS[int(hashlib.sha256(method.encode()).hexdigest(), 16) % len(OTHER_COLOURS)]


def method_order(method: str) -> tuple:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def method_labels(cells: list["Cell"]) -> dict[str, str]:
    """method -> its label (what its method file says, as the records carry it)."""
    return {cell.method: cell.method_label for cell in cells}


@dataclass
class Cell:
    key: dict
    runs: pd.DataFrame
    metric: str
    choice: selection.Choice | None
    tuned: bool
    chosen_runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    _comparisons: dict = field(default_factory=dict, repr=False, compare=False)
    _rows: dict = field(default_factory=dict, repr=False, compare=False)
    # Set when the cells span several datasets: every label then names its data.
    show_dataset: bool = False

    @property
    def method(self) -> str:
        return self.key["method"]

    @property
    def rank(self):
        return self.key["rank"]

    @property
    def lr(self) -> float | None:
        return self.choice.chosen if self.choice else None

    @property
    def learned(self) -> pd.DataFrame:
        return self.chosen_runs[self.chosen_runs["learned"]]

    def scores(self) -> dict:
        """seed -> test score (points for fractions) of the runs that learned at the chosen rate."""
        column = f"metrics.{self.metric}"
        learned = self.learned.dropna(subset=[column])
        return {int(seed): scaled(value, self.metric) for seed, value in zip(learned["seed"], learned[column])}

    def estimate(self) -> stats.Estimate:
        return stats.mean_interval(list(self.scores().values()), bounds=bounds(self.metric))

    def seed_sd(self) -> float:
        return stats.seed_sd(self.scores().values())

    def row_scores(self, split: str = "test") -> pd.DataFrame | None:
        """seed x row id: each learned run's score per row (100 if correct), or for macro-F1 its predicted
        label (the gold labels in `attrs["gold"]`), from its per-row outputs; None when the metric has no
        per-row form or any run kept no (or a changed) rows file."""
        if split not in self._rows:
            self._rows[split] = row_matrix(self.learned, split, self.metric) \
                if per_row(self.metric) and self.scores() else None
        return self._rows[split]

    def compare(self, other: "Cell") -> stats.Comparison:
        """self - other, paired on rows and seeds where both kept per-row outputs (cached: a report asks often)."""
        if id(other) not in self._comparisons:
            self._comparisons[id(other)] = stats.compare(self.scores(), other.scores(), self.row_scores(),
                                                         other.row_scores())
        return self._comparisons[id(other)]

    def score_text(self) -> str:
        """The mean and its interval, or why there is none."""
        if not self.scores():
            collapsed = int((self.chosen_runs["health"] == "collapsed").sum())
            return f"no run learned ({collapsed} of {len(self.chosen_runs)} collapsed)"
        return self.estimate().text()

    @property
    def method_label(self) -> str:
        labels = self.runs["method_label"].dropna() if "method_label" in self.runs else ()
        return str(labels.iloc[0]) if len(labels) else self.method

    @property
    def label(self) -> str:
        rank = "" if pd.isna(self.rank) else f" r={int(self.rank)}"
        data = f" · {self.key['dataset']}" if self.show_dataset else ""
        return f"{self.method_label}{rank}{data}"


def scaled(value: float, metric: str) -> float:
    """Fractions (accuracy, F1) as percentage points, like the papers; losses as they are."""
    return 100 * float(value) if is_fraction(metric) else float(value)


def per_row(metric: str) -> bool:
    """Accuracy is the mean of a per-row score (correct or not); macro-F1 is recomputed from per-row
    predicted labels; a token-weighted loss has no per-row form here."""
    return metric.endswith("accuracy") or metric.endswith("macro_f1")


def bounds(metric: str) -> tuple[float, float] | None:
    """The range a cell's score can take (points for fractions); None for a loss."""
    return (0.0, 100.0) if is_fraction(metric) else None


def difference_bounds(metric: str) -> tuple[float, float] | None:
    return (-100.0, 100.0) if is_fraction(metric) else None


def row_matrix(runs: pd.DataFrame, split: str, metric: str) -> pd.DataFrame | None:
    """The runs' per-row correctness as points (macro-F1: their predicted labels), one row per seed,
    aligned by row id."""
    series, gold = {}, None
    for _, run in runs.iterrows():
        expected, name = run.get("rows.sha256"), run.get("rows.file")
        if not isinstance(expected, str) or not isinstance(name, str) or not isinstance(run.get("path"), str):
            return None  # an older record (no per-row outputs), or one from W&B
        folder = os.path.dirname(run["path"])
        if not os.path.exists(os.path.join(folder, name)) or file_sha256(os.path.join(folder, name)) != expected:
            return None  # the file changed after the record was written: not the run's outputs
        frame = read_rows(folder, split)
        if frame is None or "correct" not in frame:
            return None
        if metric.endswith("macro_f1"):
            series[int(run["seed"])], gold = frame["pred"], frame["gold"]
        else:
            series[int(run["seed"])] = 100.0 * frame["correct"].astype(float)
    if not series:
        return None
    matrix = pd.DataFrame(series).T.dropna(axis=1)
    if gold is not None:
        labels = runs["label_names"].dropna().iloc[0] if "label_names" in runs else None
        matrix = matrix.astype(int)
        matrix.attrs = {"gold": gold.astype(int),
                        "classes": len(labels) if isinstance(labels, list) else int(max(gold.max(), matrix.max().max())) + 1}
    return matrix


def is_fraction(metric: str) -> bool:
    return any(marker in metric for marker in ("accuracy", "f1", "exact_match", "rouge"))


def higher_is_better(metric: str) -> bool:
    return not ("loss" in metric or "perplexity" in metric)


def selection_metric(metric: str) -> str:
    """The validation twin of a test metric: what learning rates are chosen by."""
    return metric.replace("test_", "validation_", 1)


def cell_keys(runs: pd.DataFrame) -> list[str]:
    """The columns that name a cell: CELL plus every setting that differs inside one, but the
    learning rate, which a cell chooses."""
    return CELL + [k for k in split_keys(runs) if k != "config.method.learning_rate"]


def build(runs: pd.DataFrame, metric: str) -> list[Cell]:
    """Every cell of the ok runs, in table order (method, then rank)."""
    ok = runs[runs["status"] == "ok"]
    if not len(ok):
        return []
    keys = cell_keys(ok)
    grouped = ok.assign(**{f"_{k}": ok[k].map(hashable) for k in keys}).groupby([f"_{k}" for k in keys], dropna=False)
    cells = [_cell(dict(zip(keys, values)), group, metric) for values, group in grouped]
    if len({c.key["dataset"] for c in cells}) > 1:
        for cell in cells:
            cell.show_dataset = True
    return sorted(cells, key=lambda c: (method_order(c.method), -1 if pd.isna(c.rank) else c.rank))


def _cell(key: dict, group: pd.DataFrame, metric: str) -> Cell:
    tuning, reported = split_roles(group)
    lrs = sorted(tuning["lr"].dropna().unique())
    if len(lrs) <= 1 and tuning is reported:
        choice = selection.Choice(lrs[0] if lrs else None, lrs)
        return Cell(key, group, metric, choice, tuned=False, chosen_runs=group)
    by_value = {lr: _trials(tuning[tuning["lr"] == lr], metric) for lr in lrs}
    choice = selection.choose(by_value, higher_is_better(metric))
    chosen = reported[reported["lr"] == choice.chosen] if choice.chosen is not None else group.iloc[0:0]
    return Cell(key, group, metric, choice, tuned=True, chosen_runs=chosen)


def split_roles(group: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the runs that choose, the runs that may be reported). A sweep that declares tuning seeds
    (the record's `role`: lab.record.role) chooses on them alone and reports only its other seeds;
    without roles, every run does both (the choice uses the seeds every rate ran, selection.choose)."""
    if "role" not in group or not group["role"].eq("tune").any():
        return group, group
    return group[group["role"] == "tune"], group[group["role"] != "tune"]


def _trials(runs: pd.DataFrame, metric: str) -> list[selection.Trial]:
    column = f"metrics.{selection_metric(metric)}"
    scores = runs[column] if column in runs else pd.Series(float("nan"), index=runs.index)
    return [selection.Trial(int(seed), None if pd.isna(score) else float(score), bool(learned))
            for seed, score, learned in zip(runs["seed"], scores, runs["learned"])]


def find(cells: list[Cell], method: str, rank=None, **setting) -> Cell | None:
    for cell in cells:
        same_rank = (pd.isna(cell.rank) and rank is None) or cell.rank == rank
        if cell.method == method and same_rank and all(cell.key.get(k) == v for k, v in setting.items()):
            return cell
    return None
