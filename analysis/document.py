"""A report as sections of Markdown, written as `report.md` and as one self-contained `report.html`.

Sections are plain Markdown (tables from `DataFrame.to_markdown`, figures as `![caption](file.png)`
beside the report). The HTML page is the same Markdown rendered by markdown-it-py (CommonMark with
tables), every figure embedded as a data URI, so the one file opens anywhere, offline.

Every string in a report comes from configs, records and paths, which anyone can name: the HTML is
rendered with raw HTML off (markdown-it escapes every `<`), and only the few attribute-free tags the
sections use for layout (SAFE_TAGS) are put back. A name such as `<script>...</script>` or
`<img src=x onerror=...>` shows as text and never runs.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import html
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

import pandas as pd
from markdown_it import MarkdownIt

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } code { background: #f3f3f3; padding: 0 3px; }
sub { color: #666; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
"""
FIGURE = re.compile(r'<img src="([^"]+\.png)"')
# Tags the sections write for layout (`<sub>lr 2e-3</sub>`): put back after escaping; no attributes,
# so none can carry a script.
SAFE_TAGS = re.compile(r"&lt;(/?)(sub|sup|br|b|i|em|strong)&gt;")
# What a report folder holds (build writes nothing else): a folder holding anything more is not one
# of ours, and is never replaced.
REPORT_FILES = re.compile(r"^[^/]+\.(md|html|png|csv)$")


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, markdown: str) -> "Section":
        self.parts.append(markdown.strip())
        return self

    def table(self, frame: pd.DataFrame, caption: str = "") -> "Section":
        body = frame.to_markdown(index=False) if len(frame) else "(no rows)"
        self.parts.append((f"{caption.strip()}\n\n" if caption else "") + body)
        return self

    def figure(self, filename: str | None, caption: str) -> "Section":
        if filename:
            self.parts.append(f"![{caption}]({filename})\n\n*{caption}*")
        return self

    def markdown(self) -> str:
        return f"## {self.title}\n\n" + "\n\n".join(self.parts)


def markdown(title: str, sections: list[Section]) -> str:
    return f"# {title}\n\n" + "\n\n".join(s.markdown() for s in sections) + "\n"


def to_html(text: str, title: str, folder: str) -> str:
    """The Markdown as one HTML page, each figure file in `folder` embedded as a data URI."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    body = SAFE_TAGS.sub(r"<\1\2>", body)

    def embed(match: re.Match) -> str:
        path = os.path.join(folder, match.group(1))
        if not os.path.isfile(path):
            return match.group(0)
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}"'

    body = FIGURE.sub(embed, body)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n")


def check_out_folder(out: str) -> None:
    """`--out` is a new folder, or one a report wrote (its files only): never a file, never a folder of
    other things (`--out .`), which replacing would lose."""
    from lab.errors import ConfigError

    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError("--out", out, "a folder for the report (this is a file)")
    if os.path.isdir(out):
        foreign = [name for name in os.listdir(out) if not (REPORT_FILES.match(name)
                                                            and os.path.isfile(os.path.join(out, name)))]
        if foreign:
            raise ConfigError("--out", out, "a new folder or one holding an earlier report only (it also holds "
                              f"{', '.join(sorted(foreign)[:3])}; a report replaces its folder whole)")


@contextlib.contextmanager
def staging(out: str):
    """A temporary folder beside `out` (same file system, so it can be renamed into place); removed
    on the way out, whatever happened."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(out))}.tmp-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


RENAME_EXCHANGE, AT_FDCWD = 2, -100


def replace_folder(new: str, out: str) -> None:
    """Put the finished folder `new` at `out`. With a previous report there, the two are swapped in one
    atomic step (Linux renameat2 RENAME_EXCHANGE, which os.replace cannot do for a non-empty folder) and
    the old one, now at `new`, is removed by staging(); elsewhere two renames, the old one kept aside."""
    os.chmod(new, 0o755)  # mkdtemp makes it private; a report folder is as readable as any
    if not os.path.isdir(out):
        os.rename(new, out)
        os.makedirs(new)  # staging() removes the (now empty) path it made
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.renameat2(AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(out), RENAME_EXCHANGE) == 0:
            return
    except (AttributeError, OSError):
        pass
    aside = new + ".old"
    os.rename(out, aside)
    os.rename(new, out)
    os.rename(aside, new)


def write(folder: str, title: str, sections: list[Section]) -> dict[str, str]:
    """report.md and report.html in `folder` (figures must already be there)."""
    os.makedirs(folder, exist_ok=True)
    text = markdown(title, sections)
    paths = {"md": os.path.join(folder, "report.md"), "html": os.path.join(folder, "report.html")}
    with open(paths["md"], "w") as f:
        f.write(text)
    with open(paths["html"], "w") as f:
        f.write(to_html(text, title, folder))
    return paths
