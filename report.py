"""The assignment's report from saved run directories, without training: every figure, plots/report.md
(figures linked relatively, so plots/ can be zipped or moved) and plots/report.html (one self-contained
file: figures inlined, no network, no script; prints to PDF with a page per task).

    python report.py                       # seconds: reads runs/<script>/, writes plots/
    python report.py --runs-dir other_runs --plot-dir other_plots
    python report.py --train-missing       # first trains every missing run with its default command

The document follows the assignment: Task 1 (the answers task1.py computes), Task 2, Task 3 (a: layers
and hyperparameters of each model, b, c, d), Task 4 (a, b, c); every number beside the reference
report's. A missing run is a paragraph with the command that makes it and how long it takes; a run
that is not the real thing (smoke run, random weights, still training...) says so in its figure
title and its rows; runs that differ only by seed (`--seeds`) are summarised as mean ± std. A run
whose files are damaged is listed with the file named, everything else is still produced, and the
exit code is then 1.
"""
from __future__ import annotations

import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import argparse  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import html  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import cli  # noqa: E402
import figures  # noqa: E402
import resnet  # noqa: E402
import runs  # noqa: E402
from report_runs import BY_NAME, REFERENCE, RUNS, duration_text, how_long, published_text  # noqa: E402
from task3_compare import caveats_of, task3_outputs  # noqa: E402
from trainer import EXPERIMENT, FILES, LENGTH, TrainingInterrupted, role  # noqa: E402
from utils import UserError, check_writable, write_text  # noqa: E402

VISUALISATIONS = {"task4b": "Task 4b (Figure 7): first-layer filters and activations",
                  "task4c": "Task 4c: last conv stage activations"}
SPLITS = ("train", "validation", "test")


def is_the_experiment(setting: str) -> bool:
    """A setting that makes two runs different experiments (trainer.role), besides the seed, which --seeds
    varies, and the script's name, which the report shows on its own."""
    return role(setting) in (EXPERIMENT, LENGTH) and setting not in ("seed", "name")


# ---------------------------------------------------------------- reading the runs

def script_argv(entry, runs_dir: Path, resume: bool = False) -> list[str]:
    """The script and flags that make (or, with resume, continue) `entry`'s run in `runs_dir`."""
    argv = shlex.split(entry.command)[1:]
    if Path(runs_dir).resolve() != runs.RUNS_DIR.resolve():
        argv += ["--run-dir", str(Path(runs_dir) / entry.name)]
    return argv + (["--resume"] if resume else [])


def command_for(entry, runs_dir: Path, resume: bool = False) -> str:
    return f"python {shlex.join(script_argv(entry, runs_dir, resume))} [--data-dir DIR]"


def load(entry, runs_dir: Path):
    """('ok' | 'in progress' | 'unfinished' | 'missing' | 'broken', run data or None, message): what the
    run's folder holds as runs.status counts it."""
    folder = Path(runs_dir) / entry.name
    try:
        held = runs.status(folder)
        if held == "finished":
            aside = runs.run_folders(folder)[0]
            # An --overwrite stopped before its first checkpoint: the finished run is whole, (partly) set aside.
            return "ok", runs.read_run(folder), "" if aside == folder else (
                f"{folder}: read from {aside.name}/, where an --overwrite that stopped before its first checkpoint "
                f"left {'part of it' if aside.name == runs.MOVING else 'it'}; the next start of its script puts "
                "it back")
        if runs.is_being_trained(folder):
            state, message = "in progress", f"{folder} is being trained right now (drawn as far as it got)"
        elif held == "unfinished":
            state = "unfinished"
            message = f"{folder} is unfinished: continue it with `{command_for(entry, runs_dir, resume=True)}`"
        else:
            return "missing", None, f"{folder} is missing: make it with `{command_for(entry, runs_dir)}`"
        try:
            return state, runs.read_run(folder, finished=False), message
        except UserError:  # nothing to draw yet (no validation, or written by an older version)
            return state, None, message
    except UserError as error:
        return "broken", None, f"unusable: {error}"


def read_all(runs_dir: Path) -> dict:
    """name -> {"state", "run", "message"} for every run the report is made of."""
    found = {}
    for entry in RUNS:
        state, run, message = load(entry, runs_dir)
        found[entry.name] = {"state": state, "run": run, "message": message}
    return found


# ---------------------------------------------------------------- the document, as blocks

class Document:
    """Headings, paragraphs, tables and figures, written out as Markdown and as self-contained HTML."""

    def __init__(self, plot_dir: Path, hide: list[str]):
        self.blocks, self.plot_dir, self.hide = [], Path(plot_dir), hide

    def clean(self, text: str) -> str:
        """No absolute path of this machine: known folders become relative, any other path its name."""
        for prefix in self.hide:
            text = text.replace(prefix + os.sep, "")
        return re.sub(r"(?<![\w.~:/-])/(?:[^\s/`|()\[\],;:]+/)+([^\s/`|()\[\],;:]+)", r"\1", text)

    def add(self, kind: str, *content) -> None:
        self.blocks.append((kind, content))

    def heading(self, level: int, text: str) -> None:
        self.add("heading", level, self.clean(text))

    def paragraph(self, text: str) -> None:
        self.add("paragraph", self.clean(text))

    def bullets(self, items) -> None:
        if items:
            self.add("bullets", [self.clean(item) for item in items])

    def table(self, header, rows) -> None:
        self.add("table", [self.clean(str(c)) for c in header], [[self.clean(str(c)) for c in row] for row in rows])

    def figure(self, path: Path, caption: str) -> None:
        """A figure of plot_dir, linked by its name (relative)."""
        self.add("figure", Path(path).name, self.clean(caption))

    def markdown(self) -> str:
        out = []
        for kind, content in self.blocks:
            if kind == "heading":
                out += ["#" * content[0] + " " + content[1], ""]
            elif kind == "paragraph":
                out += [content[0], ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in content[0]] + [""]
            elif kind == "table":
                header, rows = content
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows] + [""]
            elif kind == "figure":
                name, caption = content
                out += [f"![{caption}]({name})", "", f"*{caption}* (vector version: [{Path(name).stem}.pdf]"
                        f"({Path(name).stem}.pdf))", ""]
        return "\n".join(out)

    @staticmethod
    def _inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)

    def html(self, title: str) -> str:
        body = []
        for kind, content in self.blocks:
            if kind == "heading":
                level, text = content
                body.append(f"<h{level}>{self._inline(text)}</h{level}>")
            elif kind == "paragraph":
                body.append(f"<p>{self._inline(content[0])}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{self._inline(item)}</li>" for item in content[0]) + "</ul>")
            elif kind == "table":
                header, rows = content
                body.append("<table><thead><tr>" + "".join(f"<th>{self._inline(c)}</th>" for c in header)
                            + "</tr></thead><tbody>" + "".join(
                                "<tr>" + "".join(f"<td>{self._inline(c)}</td>" for c in row) + "</tr>"
                                for row in rows) + "</tbody></table>")
            elif kind == "figure":
                name, caption = content
                data = base64.b64encode((self.plot_dir / name).read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                            f"<figcaption>{self._inline(caption)}</figcaption></figure>")
        return HTML_PAGE.format(title=html.escape(title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: Georgia, "Times New Roman", serif; max-width: 50em; margin: 2em auto; padding: 0 1em;
       line-height: 1.4; color: #111; }}
h1, h2, h3 {{ font-family: Helvetica, Arial, sans-serif; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }}
th {{ background: #eee; }}
figure {{ margin: 1em 0; text-align: center; }}
figure img {{ max-width: 100%; height: auto; }}
figcaption {{ font-size: 0.9em; font-style: italic; }}
code {{ font-size: 0.9em; background: #f3f3f3; }}
@media print {{
  body {{ max-width: none; margin: 0; }}
  h2 {{ break-before: page; page-break-before: always; }}
  h2:first-of-type {{ break-before: auto; page-break-before: auto; }}
  h2, h3 {{ break-after: avoid; page-break-after: avoid; }}
  figure, img, table, tr {{ break-inside: avoid; page-break-inside: avoid; }}
  figure img {{ max-height: 9in; }}
}}
</style></head>
<body>
{body}
</body></html>
"""


# ---------------------------------------------------------------- pieces

def fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def notes_of(item: dict) -> list[str]:
    return runs.caveats(item["run"]["config"], item["state"]) if item["run"] else []


def split_table(entry, metrics: dict) -> tuple[list, list]:
    """Loss and accuracy of each split, ours beside the reference's."""
    rows = [[split, fmt(metrics[split]["loss"]), f"**{fmt(metrics[split]['accuracy'])}**" if split == "test"
             else fmt(metrics[split]["accuracy"]), published_text(entry, split)] for split in SPLITS]
    return ["split", "loss (ours)", "accuracy (ours)", "accuracy (reference)"], rows


def run_facts(metrics: dict) -> str:
    """Where the checkpoint the tables show comes from, and what the run cost."""
    facts = [f"best checkpoint at step {metrics['best_step']:,} of {metrics['steps']:,}"
             if isinstance(metrics.get("best_step"), int) and isinstance(metrics.get("steps"), int) else ""]
    if isinstance(metrics.get("epochs"), (int, float)):
        facts.append(f"early stopping ended the run after {metrics['epochs']:g} epochs"
                     if metrics.get("early_stopped") is True else f"{metrics['epochs']:g} epochs")
    if isinstance(metrics.get("wall_seconds"), (int, float)):
        facts.append(f"wall time {duration_text(metrics['wall_seconds'])}")
    return "; ".join(f for f in facts if f)


def machine(config: dict) -> str:
    resolved = config.get("resolved", {})
    return f"{resolved.get('device_name', '?')}, {resolved.get('precision', '?')}"


def data_text(config: dict) -> str:
    return str(config.get("data", {}).get("source", "?"))


def layer_rows(model_repr: str) -> list[list[str]]:
    """The layers of a model, from the repr that config.json keeps: (name, type, arguments) per leaf module."""
    rows, path = [], []
    for line in str(model_repr).splitlines()[1:]:
        depth = (len(line) - len(line.lstrip())) // 2 - 1
        match = re.match(r"\s*\(([\w.]+)\): (\w+)\((.*)$", line)
        if not match:
            continue
        name, kind, rest = match.groups()
        path = path[:depth] + [name]
        if rest.endswith(")"):  # a leaf: its arguments are on the line
            rows.append([".".join(path), kind, rest[:-1]])
    return rows


def architecture(doc: Document, config: dict) -> None:
    model = config.get("model", {})
    if not isinstance(model, dict) or not model.get("repr"):
        doc.paragraph("The run's config.json holds no layer list (written by an older version).")
        return
    parameters, trainable = model.get("parameters"), model.get("trainable_parameters")
    text = f"`{model.get('class', '?')}`"
    if isinstance(parameters, int):
        text += f": {parameters:,} parameters"
        if isinstance(trainable, int) and trainable != parameters:
            text += f", {trainable:,} of them trained"
    doc.paragraph(text + ".")
    doc.table(["layer", "type", "settings"], layer_rows(model["repr"]))


def hyperparameters(doc: Document, config: dict) -> None:
    """The settings the run was trained with, from its config.json (not the script's current defaults)."""
    settings = config.get("settings", {})
    rows = [[key.replace("_", "-"), value] for key, value in sorted(settings.items())
            if is_the_experiment(key) and value is not None and key != "seeds"]
    rows.append(["seed", settings.get("seed", "?")])
    rows.append(["device, precision", machine(config)])
    data = config.get("data", {})
    if all(isinstance(data.get(f"{s}_images"), int) for s in SPLITS):
        rows.append(["images (train / validation / test)",
                     " / ".join(f"{data[f'{s}_images']:,}" for s in SPLITS)])
    doc.table(["setting", "value"], rows)


def missing_paragraph(doc: Document, entry, item: dict, runs_dir: Path) -> None:
    state = item["state"]
    if state == "missing":
        doc.paragraph(f"**Not run yet.** Make it with `{command_for(entry, runs_dir)}` ({how_long(entry)}), or "
                      "`python report.py --train-missing`.")
    elif state == "unfinished":
        doc.paragraph(f"**Unfinished** (stopped before its end): continue it with "
                      f"`{command_for(entry, runs_dir, resume=True)}`.")
    elif state == "in progress":
        doc.paragraph("**Still training**: the figure shows it as far as it got; run `python report.py` again "
                      "once it has finished.")
    else:
        doc.paragraph(f"**Unusable**: {item['message'].removeprefix('unusable: ')}")


def run_section(doc: Document, entry, item: dict, drawn: dict, runs_dir: Path, caption: str) -> bool:
    """Figure, table and facts of one run; the paragraph that says how to make it when it is missing.
    True when the run is finished (its numbers shown)."""
    run, notes = item["run"], notes_of(item)
    if item["state"] != "ok":
        missing_paragraph(doc, entry, item, runs_dir)
    if entry.name in drawn.get("curves", {}):
        doc.figure(drawn["curves"][entry.name], runs.marked(caption, notes))
    if item["state"] != "ok":
        return False
    metrics = run["metrics"]
    if notes:
        doc.paragraph(f"**Not the real result**: {'; '.join(notes)}.")
    doc.table(*split_table(entry, metrics))
    facts = run_facts(metrics)
    doc.paragraph(f"{facts[:1].upper()}{facts[1:]}. Data: {data_text(run['config'])}; {machine(run['config'])}.")
    if entry.name in drawn.get("confusion", {}):
        doc.figure(drawn["confusion"][entry.name], runs.marked(f"{entry.title}: test-set confusion matrix", notes))
        pairs = figures.most_confused(metrics["test"]["confusion"], list(metrics["test"]["per_class_accuracy"]))
        doc.paragraph("Most confused: " + "; ".join(f"{true} taken for {predicted} ({count} images)"
                                                      for true, predicted, count in pairs) + ".")
    return True


# ---------------------------------------------------------------- figures

def draw(entry, item: dict, plot_dir: Path, drawn: dict) -> None:
    """The run's training curves (marked when not the real thing) and its test confusion matrix."""
    run, state = item["run"], item["state"]
    config, metrics = run["config"], run.get("metrics")
    title = config.get("title") or entry.title
    notes = runs.caveats(config, state)
    if entry.figure:
        validations = run["history"]["validation"]
        if metrics:
            heading = f"{title}: test accuracy {metrics['test']['accuracy']:.3f}"
        else:
            heading = f"{title} (step {validations[-1]['step']})"
        drawn["curves"][entry.name] = figures.training_curves(
            {title: run["history"]}, Path(plot_dir) / f"{entry.name}.png", title=runs.marked(heading, notes),
            show_test=bool(config.get("settings", {}).get("track_test")),
            marks={title: figures.run_marks(metrics, run["history"])})
    confusion = (metrics or {}).get("test", {}).get("confusion")
    if confusion:
        classes = list(metrics["test"]["per_class_accuracy"])
        drawn["confusion"][entry.name] = figures.confusion_matrix(
            confusion, classes, Path(plot_dir) / f"{entry.name}_confusion.png",
            title=runs.marked(f"{title}: test set", notes))


def visualisations(plot_dir: Path, image: Path | None = None) -> dict:
    """Redraw Tasks 4b and 4c (a second each) when the ImageNet weights are already cached; name -> (figure
    or None, what happened). The report never downloads: without the weights it says which command makes
    the figure, and an existing figure is kept."""
    cached = resnet.weights_cache_dir() / resnet.WEIGHTS_FILE
    result = {}
    for name in VISUALISATIONS:
        existing = Path(plot_dir) / f"{name}.png"
        figure = existing if existing.exists() else None
        kept = f"; the existing {name}.png (drawn earlier by `python {name}.py`) is shown" if figure else ""
        if not cached.is_file():
            result[name] = (figure, f"Not redrawn: the ImageNet weights are not in the torch hub cache and "
                                    f"report.py does not download them; make it with `python {name}.py`{kept}.")
            continue
        try:
            extra = ["--image", str(image)] if image else []
            path = importlib.import_module(name).main(["--plot-dir", str(plot_dir), *extra])
            result[name] = (path, "Redrawn from the cached ImageNet weights.")
        except UserError as error:
            result[name] = (figure, f"Not redrawn ({error}); make it with `python {name}.py`{kept}.")
    return result


# ---------------------------------------------------------------- several seeds, other runs

def finished_folders(runs_dir: Path, found: dict) -> tuple[dict, list[str]]:
    """Every finished run folder in runs_dir (folder name -> run), and damaged ones found on the way."""
    folders, problems = {}, []
    if not Path(runs_dir).is_dir():
        return folders, problems
    for folder in sorted(Path(runs_dir).iterdir()):
        if not (folder / FILES.METRICS).exists():
            continue
        item = found.get(folder.name)
        if item and item["state"] in ("ok", "broken"):
            if item["state"] == "ok":
                folders[folder.name] = item["run"]
            continue
        try:
            folders[folder.name] = runs.read_run(folder)
        except UserError as error:
            problems.append(f"unusable: {error}")
    return folders, problems


def experiment_key(run: dict):
    settings = run["config"].get("settings", {})
    return run["config"].get("name"), repr(sorted((k, repr(v)) for k, v in settings.items()
                                                  if is_the_experiment(k)))


def seed_groups(folders: dict) -> list[list[str]]:
    """Runs that differ only by seed, as rows of mean ± sample std with n."""
    groups = {}
    # Where two runs have the same seed (runs/task2 and --seeds' runs/task2-seed0), --seeds' run counts.
    for name in sorted(folders, key=lambda n: ("-seed" not in n, n)):
        run = folders[name]
        settings = run["config"].get("settings", {})
        if "seed" in settings:
            groups.setdefault(experiment_key(run), {}).setdefault(settings["seed"], run)
    rows = []
    for (name, _), by_seed in sorted(groups.items(), key=lambda item: str(item[0][0])):
        if len(by_seed) < 2:
            continue
        entry = BY_NAME.get(name)
        cells = []
        for split in SPLITS:
            values = [run["metrics"][split]["accuracy"] for run in by_seed.values()]
            cells.append(f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}")
        losses = [run["metrics"]["test"]["loss"] for run in by_seed.values()]
        notes = sorted({note for run in by_seed.values() for note in runs.caveats(run["config"])})
        rows.append([runs.marked(entry.title if entry else str(name), notes), len(by_seed),
                     ", ".join(map(str, by_seed)), *cells,
                     f"{statistics.fmean(losses):.3f} ± {statistics.stdev(losses):.3f}"])
    return rows


def differences(run: dict) -> str:
    """The settings in which a run differs from its script's defaults (as config.json recorded them)."""
    settings, defaults = run["config"].get("settings", {}), run["config"].get("defaults")
    if defaults is None:  # config.json written before runs recorded their script's defaults
        return "settings as in its config.json (defaults not recorded)"
    changed = [f"--{k.replace('_', '-')} {settings[k]}" for k in sorted(settings)
               if k in defaults and is_the_experiment(k) and k not in ("subset", "max_steps")
               and settings[k] != defaults[k]]
    return ", ".join(changed) or "the defaults"


def other_runs(folders: dict, names) -> list[list[str]]:
    """Rows for every finished run of the given scripts besides the report's own folders."""
    rows = []
    for folder, run in sorted(folders.items()):
        name = run["config"].get("name")
        if folder in BY_NAME or name not in names:
            continue
        settings = run["config"].get("settings", {})
        rows.append([f"`{folder}`", BY_NAME[name].title if name in BY_NAME else name,
                     runs.marked(differences(run), runs.caveats(run["config"])), settings.get("seed", "?"),
                     fmt(run["metrics"]["test"]["accuracy"]), fmt(run["metrics"]["test"]["loss"])])
    return rows


# ---------------------------------------------------------------- the report

def build_report(runs_dir: Path, plot_dir: Path, image: Path | None = None) -> tuple[Document, list[str], list[str]]:
    """Draw the figures; return the document, the runs not shown complete, and problems worth exit 1."""
    runs_dir, plot_dir = Path(runs_dir), Path(plot_dir)
    found = read_all(runs_dir)
    absent = [item["message"] for item in found.values() if item["state"] != "ok"]
    problems = [item["message"] for item in found.values() if item["state"] == "broken"]
    drawn = {"curves": {}, "confusion": {}}
    for entry in RUNS:
        if found[entry.name]["run"] is not None:
            draw(entry, found[entry.name], plot_dir, drawn)
    loaded = {name: item["run"] for name, item in found.items() if item["state"] == "ok"}
    folders, folder_problems = finished_folders(runs_dir, found)
    problems += [p for p in folder_problems if p not in problems]

    hide = sorted({str(p) for p in (runs_dir.resolve().parent, runs_dir.parent, plot_dir.resolve(), runs.ROOT,
                                    Path.home()) if str(p) not in ("", ".", os.sep)}, key=len, reverse=True)
    doc = Document(plot_dir, hide)
    doc.heading(1, "CIFAR-10 classification: the assignment's results")
    sources = sorted({data_text(run["config"]) for run in loaded.values()})
    doc.paragraph(f"Written by `python report.py` from the run folders in `{runs_dir.name}/` (no training). "
                  f"Every number of ours stands beside the reference's: {REFERENCE}. Our data: "
                  f"{'; '.join(sources) if sources else 'no finished run yet'}. The project's JPEG copy of CIFAR-10 "
                  "(quality ~75) is not bit-identical to the original, so expect our accuracies a few points "
                  "below the reference's (about 3 points in our runs). A run that is not the real thing (a smoke "
                  "run, random weights, another image size or split, a run still training or stopped before its "
                  "end) says so in its figure's title and in its rows.")
    summary = []
    for entry in RUNS:
        item = found[entry.name]
        if item["state"] != "ok":
            summary.append([entry.title, item["state"], "", "", "", "", ""])
            continue
        metrics = item["run"]["metrics"]
        summary.append([runs.marked(entry.title, notes_of(item)), "finished",
                        *[f"{fmt(metrics[s]['accuracy'])} / {published_text(entry, s)}" for s in SPLITS],
                        fmt(metrics["test"]["loss"]), run_facts(metrics)])
    doc.heading(2, "Summary")
    doc.table(["run", "state", "train acc (ours / reference)", "validation acc (ours / reference)",
               "test acc (ours / reference)", "test loss", "checkpoint"], summary)

    task1(doc)

    doc.heading(2, "Task 2: a first convolutional network")
    entry = BY_NAME["task2"]
    doc.heading(3, "Task 2a: training curves (Figure 2)")
    run_section(doc, entry, found["task2"], drawn, runs_dir,
                "Figure 2: Task 2 training and validation loss, training (running) and validation accuracy; the "
                "star marks the checkpoint the tables show")
    if "task2" in loaded:
        doc.heading(3, "Task 2a: the network")
        architecture(doc, loaded["task2"]["config"])
        doc.heading(3, "Task 2a: hyperparameters")
        hyperparameters(doc, loaded["task2"]["config"])

    task3(doc, found, loaded, drawn, runs_dir, plot_dir, folders, problems)
    task4(doc, found, loaded, drawn, runs_dir, plot_dir, image)

    seeds = seed_groups(folders)
    if seeds:
        doc.heading(2, "Several seeds")
        doc.paragraph("Runs that differ only by their seed (`--seeds`): mean ± sample standard deviation over n runs.")
        doc.table(["run", "n", "seeds", "train acc", "validation acc", "test acc", "test loss"], seeds)
    others = other_runs(folders, {name for name in BY_NAME if not name.startswith("task3")} | {None})
    if others:
        doc.heading(2, "Other runs")
        doc.table(["folder", "task", "differs from the recipe in", "seed", "test acc", "test loss"], others)
    if absent or problems:
        doc.heading(2, "Missing, unfinished or unusable runs")
        doc.bullets(absent + [p for p in problems if p not in absent])
    if loaded:
        doc.heading(2, "Runs")
        doc.table(["run", "folder", "data", "machine, precision", "torch", "not the real thing"],
                  [[BY_NAME[name].title, f"`{runs_dir.name}/{name}`", data_text(run["config"]),
                    machine(run["config"]), run["config"].get("versions", {}).get("torch", "?"),
                    "; ".join(runs.caveats(run["config"])) or "no"] for name, run in loaded.items()])
    return doc, absent, problems


def task1(doc: Document) -> None:
    import task1 as answers_module

    ours, report = answers_module.answers(), answers_module.REPORT
    doc.heading(2, "Task 1: theory")
    doc.paragraph("Computed by `python task1.py` with real torch layers (and the convolution also by a plain loop), "
                  "beside the reference's answers.")
    doc.heading(3, "Task 1a: convolution by hand")
    doc.paragraph("The 3x5 image convolved with the 3x3 Laplacian kernel, zero padding, stride 1:")
    doc.table(["image", "kernel"], [[" ".join(map(str, row)), " ".join(map(str, kernel)) if kernel else ""]
                                    for row, kernel in zip(answers_module.IMAGE, answers_module.LAPLACIAN)])
    doc.table(["result (ours)", "result (reference)"], [[" ".join(f"{v:d}" for v in o), " ".join(f"{v:d}" for v in r)]
                                                          for o, r in zip(ours["1a"], report["1a"])])
    doc.heading(3, "Task 1c-1f: sizes")
    questions = {"1c": "padding that keeps 32x32 with a 5x5 kernel, stride 1",
                 "1d": "kernel size that takes 512x512 to 504x504 without padding",
                 "1e": "size after 2x2 max pooling, stride 2", "1f": "size after a 3x3 convolution, no padding"}
    doc.table(["task", "question", "ours", "reference"],
              [[key, text, ours[key], report[key]] for key, text in questions.items()])
    doc.heading(3, "Task 1g: parameters of the Task 2 network")
    rows = [[name, description, f"{count:,}", f"{theirs:,}" if theirs is not None else ""]
            for (name, description, count), theirs in zip(ours["1g_layers"], report["1g"] + [None] * 10)]
    rows.append(["total", "", f"**{sum(ours['1g']):,}**", f"{sum(report['1g']):,}"])
    doc.table(["layer", "weights + biases", "parameters (ours)", "reference"], rows)


def task3(doc, found, loaded, drawn, runs_dir, plot_dir, folders, problems) -> None:
    doc.heading(2, "Task 3: deeper and wider networks")
    doc.paragraph("Task 3a: each model's layers and the hyperparameters it was trained with, read from its run's "
                  "config.json.")
    for name in ("task3_model1", "task3_model2"):
        entry = BY_NAME[name]
        doc.heading(3, f"Task 3a: {entry.label}")
        if name in loaded:
            architecture(doc, loaded[name]["config"])
            hyperparameters(doc, loaded[name]["config"])
        run_section(doc, entry, found[name], drawn, runs_dir, f"{entry.title}: training curves")
    try:
        messages = task3_outputs(runs_dir, plot_dir, loaded)
    except UserError as error:
        messages = []
        if not any(str(error) in problem for problem in problems):
            problems.append(str(error))
    comparison, deepening = Path(plot_dir) / "task3_comparison.png", Path(plot_dir) / "task3c_deepening.png"
    doc.heading(3, "Task 3b: Model 1 against Model 2")
    if any(str(comparison) in m for m in messages):
        one, two = (loaded[n]["metrics"] for n in ("task3_model1", "task3_model2"))
        rows = []
        for split in SPLITS:
            rows.append([f"{split} loss", fmt(one[split]["loss"]), fmt(two[split]["loss"]), "", ""])
            rows.append([f"{split} accuracy", fmt(one[split]["accuracy"]), fmt(two[split]["accuracy"]),
                         *(published_text(BY_NAME[n], split) for n in ("task3_model1", "task3_model2"))])
        doc.table(["", "Model 1 (ours)", "Model 2 (ours)", "Model 1 (reference)", "Model 2 (reference)"], rows)
        gap = 100 * (one["test"]["accuracy"] - two["test"]["accuracy"])
        doc.paragraph(f"Model 1 {'beats' if gap > 0 else 'trails'} Model 2 by {abs(gap):.1f} points of test accuracy "
                      "(reference: Model 1 ahead by 4.7 points).")
        doc.figure(comparison, runs.marked("Task 3b: Model 1 and Model 2, loss and accuracy",
                                           caveats_of({n: loaded[n] for n in ("task3_model1", "task3_model2")})))
    else:
        doc.paragraph("Needs both models (above).")
    doc.heading(3, "Task 3c: deepening the network")
    if any(str(deepening) in m for m in messages):
        before, after = (loaded[n]["metrics"]["test"]["accuracy"] for n in ("task3c_before", "task3_model1"))
        doc.paragraph(f"Doubling the conv layers (one conv per stage -> Model 1's two) took test accuracy from "
                      f"{before:.3f} to {after:.3f}: **{100 * (after - before):+.1f} points** (reference: roughly "
                      "+4 points).")
        doc.figure(deepening, runs.marked("Task 3c: training, validation and test loss before and after deepening",
                                          caveats_of({n: loaded[n] for n in ("task3c_before", "task3_model1")})))
    else:
        item = found["task3c_before"]
        if item["state"] != "ok":
            missing_paragraph(doc, BY_NAME["task3c_before"], item, runs_dir)
        doc.paragraph("The comparison also needs Task 3 Model 1 (above).")
    rows = other_runs(folders, {"task3_model1", "task3_model2", "task3c_before"})
    doc.heading(3, "Task 3c: other experiments (optimizer, activation, L2)")
    if rows:
        doc.table(["folder", "network", "differs from the recipe in", "seed", "test acc", "test loss"], rows)
    else:
        doc.paragraph("No such run yet: e.g. `python task3_model1.py --optimizer adam --lr 1e-3 --run-dir "
                      "runs/task3_model1-adam`, `--activation elu`, `--weight-decay 1e-4` (L2); each appears here.")
    doc.heading(3, "Task 3d: the best model")
    entry = BY_NAME["task3d"]
    if "task3d" in loaded:
        doc.heading(3, "Task 3d: architecture")
        architecture(doc, loaded["task3d"]["config"])
        doc.heading(3, "Task 3d: recipe")
        hyperparameters(doc, loaded["task3d"]["config"])
    doc.heading(3, "Task 3d: result")
    run_section(doc, entry, found["task3d"], drawn, runs_dir, "Task 3d: training curves")


def task4(doc, found, loaded, drawn, runs_dir, plot_dir, image) -> None:
    doc.heading(2, "Task 4: transfer learning with ResNet-18")
    doc.heading(3, "Task 4a: fine-tuning ImageNet-pretrained ResNet-18")
    entry = BY_NAME["task4a"]
    if "task4a" in loaded:
        hyperparameters(doc, loaded["task4a"]["config"])
    run_section(doc, entry, found["task4a"], drawn, runs_dir, "Task 4a: training curves")
    for name, (figure, what) in visualisations(plot_dir, image).items():
        doc.heading(3, VISUALISATIONS[name])
        doc.paragraph(what)
        if figure:
            title = figure_title(figure)
            if "random weights" in title:
                doc.paragraph(f"**Not the real thing**: drawn with random weights; `python {name}.py` with the "
                              "ImageNet weights draws the real figure.")
            doc.figure(figure, title or VISUALISATIONS[name])


def figure_title(path: Path) -> str:
    """The title figures.save wrote into a PNG ('' for a figure drawn by an older version)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.info.get("Title", ""))
    except OSError:
        return ""


# ---------------------------------------------------------------- --train-missing

def training_plan(runs_dir: Path, data_dir: str | None) -> list[tuple]:
    """(entry, argv of the script) for every run the report needs that is missing or unfinished, in order."""
    plan = []
    for entry in RUNS:
        state, _, _ = load(entry, runs_dir)
        if state not in ("missing", "unfinished"):
            continue
        argv = script_argv(entry, runs_dir, resume=state == "unfinished")
        argv += ["--data-dir", str(data_dir)] if data_dir else []
        plan.append((entry, argv))
    return plan


def train_one(argv: list[str]) -> int:
    """Run one task script as its own process (as from the shell); its exit code."""
    process = subprocess.Popen([sys.executable, str(runs.ROOT / argv[0]), *argv[1:]], cwd=runs.ROOT)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the script too (one process group): it finishes its step and saves last.pt,
        # which can take long (a Task 4a step on a CPU). Killing it now would lose that; a second
        # Ctrl-C reaches it as well and stops it at once.
        with contextlib.suppress(KeyboardInterrupt):
            process.wait()
        raise


def train_missing(runs_dir: Path, data_dir: str | None) -> None:
    import torch

    plan = training_plan(runs_dir, data_dir)
    if not plan:
        print("every run the report needs exists; nothing to train", file=sys.stderr)
        return
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    estimates = [entry.seconds.get(kind) for entry, _ in plan]
    known = sum(e for e in estimates if e)
    print(f"will train {len(plan)} run(s), in this order (estimates on a {'GPU' if kind == 'gpu' else 'CPU'}, "
          "from the README's measurements):", file=sys.stderr)
    for (entry, argv), estimate in zip(plan, estimates):
        print(f"  python {shlex.join(argv)}   ~{duration_text(estimate) if estimate else '? (not measured)'}",
              file=sys.stderr)
    print(f"in all about {duration_text(known)}{' plus the unmeasured ones' if None in estimates else ''}",
          file=sys.stderr)
    for entry, argv in plan:
        try:
            code = train_one(argv)
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"interrupted while training {entry.name}; `python report.py --train-missing` "
                                      "continues where it stopped") from None
        if code != 0:
            raise UserError(f"training {entry.name} failed (exit {code}, see above); fix it and run "
                            "`python report.py --train-missing` again (finished runs are kept)")


def main(argv=None):
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=runs.RUNS_DIR,
                        help="folder holding one run directory per script (default: runs/)")
    parser.add_argument("--plot-dir", type=Path, default=runs.PLOT_DIR,
                        help="where figures, report.md and report.html are written (default: plots/)")
    parser.add_argument("--image", type=Path, default=None,
                        help="photo for the Task 4b/4c figures (default: task4b.py's, images/zebra.jpg)")
    parser.add_argument("--train-missing", action="store_true",
                        help="first train, in order, every run the report needs that is missing (or continue it "
                             "when unfinished), with the default commands; prints the plan and an estimate first")
    parser.add_argument("--data-dir", default=None, help="with --train-missing: the CIFAR-10 folder to train on")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.runs_dir.exists() and not args.runs_dir.is_dir():
        raise UserError(f"--runs-dir {args.runs_dir} is a file; it must be the folder that holds one run folder "
                        "per script (default: runs/)")
    # A fresh checkout has no runs/ yet: the report then lists every command to run.
    if not args.runs_dir.is_dir() and args.runs_dir.resolve() != runs.RUNS_DIR.resolve() and not args.train_missing:
        raise UserError(f"no run directories: {args.runs_dir} does not exist; train first "
                        "(e.g. python task2.py) or point --runs-dir at the folder holding them")
    check_writable(args.plot_dir)
    if args.train_missing:
        train_missing(args.runs_dir, args.data_dir)
    doc, absent, problems = build_report(args.runs_dir, args.plot_dir, args.image)
    path, page = Path(args.plot_dir) / "report.md", Path(args.plot_dir) / "report.html"
    text = doc.markdown()
    write_text(text, path)
    write_text(doc.html("CIFAR-10 classification: the assignment's results"), page)
    print(text)
    print(f"wrote {path} and {page}", file=sys.stderr)
    for line in absent:
        print(line, file=sys.stderr)
    if problems:
        raise UserError(f"{len(problems)} run(s) could not be read (listed above and in {path}); "
                        "the rest of the report was written")


if __name__ == "__main__":
    cli.main(main)
