"""The report as a list of blocks (headings, paragraphs, tables, figures, the student's own Markdown), written out as
Markdown (plots/report.md, figures linked relatively) and as one self-contained HTML page (plots/report.html:
figures inlined, no network, no script) that prints like a report. Every piece of text is Markdown, rendered to
HTML by markdown-it-py; only the figures and the page around them are written here."""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

# CommonMark with tables; $...$ stays the math it is, as text (no digits or spaces at its edges, so that
# "$5 and $6" is money). Raw HTML is kept: a student's comments, <sub>, <br>.
MARKDOWN = (MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")
            .use(dollarmath_plugin, allow_space=False, allow_digits=False))


SHORT = 120  # characters: a paragraph this short is kept on the page of the heading above it


def without_paths(text: str) -> str:
    """`text` with every absolute path of this machine cut to its last name (/tmp/a/cifar10-jpeg: cifar10-jpeg)."""
    return re.sub(r"(?<![\w.~:/<-])/(?:[^\s/`|()\[\],;:<>]+/)+([^\s/`|()\[\],;:<>]+)", r"\1", text)


def escape_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def demoted(markdown: str, level: int) -> str:
    """Markdown whose headings are at least `level` deep (a student's "# Notes" inside Task 2a stays under it);
    fenced code is left alone."""
    out, fence = [], None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if marker and (fence is None or stripped.startswith(fence)):
            fence = None if fence else marker.group(1)
        elif fence is None and (heading := re.match(r"( {0,3})(#{1,6})(\s|$)", line)):
            line = heading.group(1) + "#" * max(level, len(heading.group(2))) + line[heading.end(2):]
        out.append(line)
    return "\n".join(out)


class Document:
    """Blocks in reading order. `hide`: folder prefixes of this machine that no file may show (known folders
    become relative, any other absolute path its last name)."""

    def __init__(self, plot_dir: Path, hide: list[str]):
        self.blocks, self.plot_dir, self.hide = [], Path(plot_dir), hide

    def clean(self, text: str) -> str:
        text = str(text)
        for prefix in self.hide:
            text = text.replace(prefix + os.sep, "")
        return without_paths(text)

    def add(self, kind: str, markdown: str = "", **extra) -> None:
        self.blocks.append({"kind": kind, "markdown": markdown, **extra})

    def heading(self, level: int, text: str, anchor: str = "") -> None:
        self.add("heading", "#" * level + " " + self.clean(text), level=level, anchor=anchor)

    def paragraph(self, text: str, style: str = "") -> None:
        """A paragraph of Markdown; style "banner" sets it apart in the HTML."""
        self.add("paragraph", self.clean(text), style=style)

    def bullets(self, items) -> None:
        if items:
            self.add("paragraph", "\n".join(f"- {self.clean(item)}" for item in items))

    def table(self, header, rows, align: str = "", caption: str = "") -> None:
        """A table; `align` one letter per column (l, r, c), default left; `caption` above it."""
        align = align.ljust(len(header), "l")
        rule = {"l": "---", "r": "---:", "c": ":---:"}
        lines = ["| " + " | ".join(escape_cell(self.clean(c)) for c in header) + " |",
                 "|" + "|".join(rule[a] for a in align[:len(header)]) + "|"]
        lines += ["| " + " | ".join(escape_cell(self.clean(c)) for c in row) + " |" for row in rows]
        if caption:
            self.add("caption", f"*{self.clean(caption)}*", style="caption")
        self.add("table", "\n".join(lines))

    def figure(self, path: Path, caption: str, size: str = "") -> None:
        """A figure of plot_dir, linked by its name (relative); size "half" prints it at half the text width."""
        name, caption = Path(path).name, self.clean(caption)
        self.add("figure", f"![{caption}]({name})\n\n*{caption}* (vector version: [{Path(name).stem}.pdf]"
                           f"({Path(name).stem}.pdf))", name=name, caption=caption, size=size)

    def answer(self, markdown: str, level: int) -> None:
        """The student's own Markdown, as written (headings kept below `level`); never cleaned or changed."""
        if markdown.strip():
            self.add("answer", demoted(markdown.strip(), level + 1))

    def group(self) -> None:
        """Start a group of blocks printed side by side where they fit (e.g. two small figures); end_group ends it."""
        self.add("group")

    def end_group(self) -> None:
        self.add("end_group")

    def markdown(self) -> str:
        return "\n\n".join(block["markdown"] for block in self.blocks if block["markdown"]) + "\n"

    def _html_block(self, block: dict) -> str:
        kind = block["kind"]
        if kind == "figure":
            data = base64.b64encode((self.plot_dir / block["name"]).read_bytes()).decode()
            size = f' class="{block["size"]}"' if block["size"] else ""
            return (f'<figure{size}><img src="data:image/png;base64,{data}" alt="{html.escape(block["caption"])}">'
                    f"<figcaption>{MARKDOWN.renderInline(block['caption'])}</figcaption></figure>")
        if kind == "heading":
            level, text = block["level"], block["markdown"].lstrip("#").strip()
            anchor = f' id="{block["anchor"]}"' if block["anchor"] else ""
            return f"<h{level}{anchor}>{MARKDOWN.renderInline(text)}</h{level}>"
        rendered = MARKDOWN.render(block["markdown"])
        style = block.get("style") or ("answer" if kind == "answer" else "")
        return f'<div class="{style}">{rendered}</div>' if style else rendered

    def html(self, title: str) -> str:
        """One page; a heading is printed together with what follows it (never alone at the foot of a page)."""
        body, pending, groups = [], [], []
        for block in self.blocks:
            if block["kind"] == "group":  # headings waiting for it stay with the whole group
                groups.append((len(body), "".join(pending)))
                pending = []
                continue
            if block["kind"] == "end_group":
                start, before = groups.pop()
                row = f'<div class="row">{"".join(body[start:])}</div>'
                body[start:] = [f'<div class="keep">{before}{row}</div>' if before else row]
                continue
            piece = self._html_block(block)
            # A heading waits for what follows it: a caption or a line or two, then the first table, figure or
            # longer text, and is printed together with them.
            short = block["kind"] == "paragraph" and len(block["markdown"]) < SHORT and pending and len(pending) < 4
            if block["kind"] in ("heading", "caption") or short:
                pending.append(piece)
                continue
            if pending:
                piece = f'<div class="keep">{"".join(pending)}{piece}</div>'
                pending = []
            body.append(piece)
        body += pending
        return HTML_PAGE.format(title=html.escape(title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: Georgia, "Times New Roman", serif; max-width: 46em; margin: 2em auto; padding: 0 1em;
       line-height: 1.35; color: #111; font-size: 11pt; }}
h1, h2, h3, h4 {{ font-family: Helvetica, Arial, sans-serif; margin: 0.9em 0 0.35em; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.3em; }} h3 {{ font-size: 1.08em; }} h4 {{ font-size: 1em; }}
p, ul, ol {{ margin: 0.35em 0; }}
table {{ border-collapse: collapse; margin: 0.4em 0; font-size: 0.88em; }}
th, td {{ border: 1px solid #bbb; padding: 0.12em 0.45em; vertical-align: top; }}
th {{ background: #eee; }}
figure {{ margin: 0.6em 0; text-align: center; }}
figure img {{ max-width: 100%; height: auto; }}
figure.half img {{ max-width: 60%; }}
figcaption, .caption p {{ font-size: 0.88em; font-style: italic; }}
.caption p {{ margin-bottom: 0.1em; }}
.row {{ display: flex; gap: 1.2em; align-items: flex-start; flex-wrap: wrap; }}
.row > * {{ flex: 0 1 auto; }}
.row figure.half {{ flex: 1 1 45%; }} .row figure.half img {{ max-width: 100%; }}
.banner {{ border: 2px solid #b00; background: #fff3f3; padding: 0.2em 0.7em; }}
.titleblock {{ text-align: center; }}
.answer {{ border-left: 3px solid #48a; padding-left: 0.7em; }}
.math {{ font-family: "Latin Modern Math", "Cambria Math", serif; font-style: italic; }}
code {{ font-size: 0.9em; background: #f3f3f3; }}
@page {{ margin: 1.6cm 1.7cm; }}
@media print {{
  body {{ max-width: none; margin: 0; padding: 0; font-size: 10pt; }}
  h1, h2, h3, h4 {{ break-after: avoid; }}
  .keep, figure, tr, .row {{ break-inside: avoid; }}
  figure img {{ max-height: 4.3in; }}
  figure.half img {{ max-height: 3.4in; }}
  a {{ color: inherit; text-decoration: none; }}
}}
</style></head>
<body>
{body}
</body></html>
"""
