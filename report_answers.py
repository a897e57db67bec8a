"""The student's own words: a Markdown file (answers.md by default) with the report's title, its authors and a
section per question, written once with the headings when it does not exist and never changed after that.
report.py puts each section under its question in plots/report.md and plots/report.html."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from report_document import MARKDOWN
from utils import UsageError, UserError, path_kind

# The assignment's questions, in its order: key -> heading.
QUESTIONS = {
    "1a": "Task 1a: convolution by hand", "1b": "Task 1b: max pooling and translation",
    "1c": "Task 1c: padding", "1d": "Task 1d: kernel size", "1e": "Task 1e: pooled size",
    "1f": "Task 1f: second layer size", "1g": "Task 1g: parameters",
    "2a": "Task 2a: training curves", "2b": "Task 2b: final loss and accuracy",
    "3a": "Task 3a: two models", "3b": "Task 3b: Model 1 against Model 2", "3c": "Task 3c: what helped",
    "3d": "Task 3d: the best model", "4a": "Task 4a: ResNet-18 transfer learning",
    "4b": "Task 4b: first-layer filters", "4c": "Task 4c: last-layer activations",
}
DEFAULT_TITLE = "CIFAR-10 classification: the assignment's report"
HEADING = re.compile(r"^\s*(?:task\s*)?(\d[a-g])\b", re.IGNORECASE)

TEMPLATE = """# {title}

<!-- Authors, course and date: write them here, in place of this comment; they appear under the title. -->

<!-- Your answers, a section per question. `python report.py` puts each section under its question in
plots/report.md and plots/report.html, and never changes this file. Write Markdown: paragraphs, lists,
*emphasis*, **bold**, tables, `code` and $math$ (shown as you write it). Keep each "## Task ..." heading (its
words after the question's number may change); a section under any other "##" heading appears at the end of
the report. Comments like this one are not shown. -->

{sections}"""


def template() -> str:
    sections = "\n".join(f"## {heading}\n\n<!-- your answer -->\n" for heading in QUESTIONS.values())
    return TEMPLATE.format(title=DEFAULT_TITLE, sections=sections)


@dataclass
class Answers:
    path: Path | None = None
    title: str = DEFAULT_TITLE
    front: str = ""                                     # what stands between the title and the first question
    by_question: dict = field(default_factory=dict)     # "2a" -> Markdown
    others: list = field(default_factory=list)          # (heading, Markdown) of sections that answer no question
    note: str = ""                                      # what happened to the file, for the summary

    def answered(self) -> list[str]:
        return [key for key in QUESTIONS if has_text(self.by_question.get(key, ""))]


def has_text(markdown: str) -> bool:
    """Whether Markdown says anything once its comments are gone."""
    return bool(re.sub(r"<!--.*?-->", "", markdown, flags=re.DOTALL).strip())


def parse(text: str, path: Path | None = None) -> Answers:
    """The title (the first level-1 heading), what stands before the first level-2 heading, and each level-2
    section by the question its heading names ("## Task 2a ...", "## 2a"); headings inside code blocks are text."""
    lines = text.splitlines()
    headings = [(token.map[0], int(token.tag[1])) for token in MARKDOWN.parse(text)
                if token.type == "heading_open" and token.tag in ("h1", "h2") and token.map]
    answers = Answers(path=path)
    title_line = next((line for line, level in headings if level == 1), None)
    sections = [line for line, level in headings if level == 2]
    first = sections[0] if sections else len(lines)
    if title_line is not None and title_line < first:
        answers.title = lines[title_line].strip().lstrip("#").strip() or DEFAULT_TITLE
        answers.front = "\n".join(lines[title_line + 1:first]).strip()
    else:
        answers.front = "\n".join(lines[:first]).strip()
    for index, start in enumerate(sections):
        end = sections[index + 1] if index + 1 < len(sections) else len(lines)
        heading = lines[start].strip().lstrip("#").strip()
        body = "\n".join(lines[start + 1:end]).strip()
        match = HEADING.match(heading)
        if match and match.group(1).lower() in QUESTIONS and match.group(1).lower() not in answers.by_question:
            answers.by_question[match.group(1).lower()] = body
        else:  # nothing a student wrote is dropped: it goes to the end of the report
            answers.others.append((heading, body))
    return answers


def check_answers_path(path: Path) -> None:
    """Refuse an --answers that can never be a Markdown file (exit 2), before any work."""
    try:
        kind = path_kind(path)
    except OSError as error:
        raise UsageError(f"--answers {path} cannot be read ({error.strerror}); pass a Markdown file") from None
    if kind not in (None, "a file"):
        raise UsageError(f"--answers {path} is {kind}, not a Markdown file; pass a file, e.g. --answers answers.md")


def read_or_create(path: Path) -> Answers:
    """The answers in `path`; a missing file is created with the title and a heading per question first (never
    over an existing one, even one made in the meantime). One that cannot be made or read still gives a report."""
    path = Path(path)
    note = ""
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(template())
        note = f"wrote {path}: a section per question for your own answers (report.py never changes it)"
    except FileExistsError:
        pass
    except OSError as error:
        return Answers(path=path, note=f"could not create {path} ({error.strerror}); the report has no answers "
                                       "of yours")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--answers {path} is not UTF-8 text; save it as UTF-8 Markdown") from None
    except OSError as error:
        raise UserError(f"--answers {path} cannot be read ({error.strerror}); fix its permissions or pass "
                        "another file") from None
    answers = parse(text, path)
    answers.note = note or f"answers from {path}: {len(answers.answered())} of {len(QUESTIONS)} questions answered"
    return answers
