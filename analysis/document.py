"""A report as sections of Markdown, written as `report.md` and as one self-contained `report.html`.

Sections are plain Markdown (tables from `DataFrame.to_markdown`, figures as `![caption](file.png)`
beside the report). The HTML page is the same Markdown rendered by markdown-it-py (CommonMark with
tables), every figure embedded as a data URI, so the one file opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import os
import re
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
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)

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


def publish(text: str, folder: str, name: str) -> str:
    """Print a generated Markdown file and write it into `folder`; return its path."""
    print(text)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


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
