"""The report's sections, one per question of the assignment in its order (1a-1g, 2a-2b, 3a-3d, 4a-4c), each
with what the code answers, the reference's facts beside ours (reference.py; "not given" where it gives none),
and the student's own answer to it; then the appendix (confusion matrices, seeds, other runs, the machines).

Every number from a run that is not the real thing (a smoke run, random weights, another size or split, a run
still training) is marked where it is shown: in its figure's title, its table's header or row, its sentence."""
from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import figures
import reference
from report_answers import QUESTIONS, Answers, has_text
from report_document import Document
from report_figures import VISUALISATIONS
from report_layers import reference_form
from report_runs import (BROKEN, BY_NAME, EXPERIMENTS, FINISHED, IN_PROGRESS, MISSING, RUNS, UNFINISHED, command_for,
                         duration_text, how_long, not_real, state_text)
from run_folder import FILES, ROOT, caveats, marked, read_run
from settings import EXPERIMENT, LENGTH, role
from utils import UserError

SPLITS = ("train", "validation", "test")
STATE_MARKS = {IN_PROGRESS: "still training", UNFINISHED: "unfinished"}
SETTING_NAMES = {"lr": "learning rate", "epochs": "epochs (at most)",
                 "early_stop_count": "early stopping patience (validations)", "batch_size": "batch size",
                 "weight_decay": "weight decay (L2)"}
SPLIT_NAMES = {"train": "Training", "validation": "Validation", "test": "Test"}
TASK3D_DOC = ROOT / "docs" / "task3d.md"


def is_the_experiment(setting: str) -> bool:
    """A setting that makes two runs different experiments (settings.role), besides the seed, which --seeds
    varies, and the script's name, which the report shows on its own."""
    return role(setting) in (EXPERIMENT, LENGTH) and setting not in ("seed", "name")


@dataclass
class Report:
    """What the sections are made of: the runs as read (report_runs.load), their figures, the answers."""
    runs_dir: Path
    plot_dir: Path
    found: dict                  # name -> {"state", "run", "message"}: the assignment's runs and 3c's experiments
    drawn: dict                  # {"curves": {name: png}, "confusion": {name: png}}
    folders: dict                # every finished run folder in runs_dir: folder name -> run
    answers: Answers
    visuals: dict                # task4b/task4c -> (png or None, what happened)
    problems: list = field(default_factory=list)
    extra_figures: list = field(default_factory=list)  # numbers given to figures beyond the reference's

    @property
    def loaded(self) -> dict:
        return {name: item["run"] for name, item in self.found.items() if item["state"] == FINISHED}

    def notes(self, name: str) -> list[str]:
        return not_real(self.found[name])

    def label(self, name: str, text: str | None = None) -> str:
        """A run's label in a table, marked in a word or two when it is not the real thing (the banner, the
        figures and the runs appendix say it in full)."""
        item = self.found[name]
        short = state_text(item) if item["state"] == FINISHED else STATE_MARKS.get(item["state"], item["state"])
        return marked(text or BY_NAME[name].label, [short] if self.notes(name) else [])

    def sentence_mark(self, *names: str) -> str:
        """' (not the real result: Model 1: smoke run ...)' for a sentence drawn from these runs, else ''."""
        notes = [f"{BY_NAME[n].label}: {'; '.join(self.notes(n))}" for n in names if self.notes(n)]
        return f" (**not the real result**: {'; '.join(notes)})" if notes else ""


# ---------------------------------------------------------------- small pieces

def fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def quote(fact: reference.Fact) -> str:
    """The reference's own words, quoted, with the question they answer."""
    return f"\"{fact.value}\" ({fact.question})"


def figure_number(question: str) -> int:
    """Figures 1-7 as the reference numbers them; its second Figure 7 (4c) is our 8."""
    return 8 if question == "4c" else reference.FIGURES[question].value


def machine(config: dict) -> str:
    resolved = config.get("resolved", {})
    return f"{resolved.get('device_name', '?')}, {resolved.get('precision', '?')}"


def data_text(config: dict) -> str:
    return str(config.get("data", {}).get("source", "?"))


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


def answer(doc: Document, report: Report, key: str) -> None:
    """The student's answer to question `key`, under its heading."""
    text = report.answers.by_question.get(key, "")
    if has_text(text):
        doc.answer(text, level=3)


def question(doc: Document, key: str) -> None:
    doc.heading(3, QUESTIONS[key], anchor=f"task{key}")


def status_paragraph(doc: Document, report: Report, name: str) -> None:
    """For a run that is not finished: how to make, continue or repair it."""
    item, entry = report.found[name], BY_NAME[name]
    state = item["state"]
    if state == MISSING:
        doc.paragraph(f"**Not run yet.** Make it with `{command_for(entry, report.runs_dir)}` ({how_long(entry)}), "
                      "or `python report.py --train-missing`.")
    elif state == UNFINISHED:
        doc.paragraph(f"**Unfinished** (stopped before its end): continue it with "
                      f"`{command_for(entry, report.runs_dir, '--resume')}`.")
    elif state == IN_PROGRESS:
        doc.paragraph("**Still training**: the figure shows it as far as it got; run `python report.py` again "
                      "once it has finished.")
    else:
        doc.paragraph(f"**Unusable**: {item['message'].removeprefix('unusable: ')}")


def curves(doc: Document, report: Report, name: str, number: int, caption: str) -> None:
    """Figure `number`: a run's training curves (as far as it got), marked when not the real thing."""
    if name in report.drawn["curves"]:
        doc.figure(report.drawn["curves"][name], marked(f"Figure {number}: {caption}", report.notes(name)))


def split_table(doc: Document, report: Report, name: str) -> None:
    """Loss and accuracy of each split, ours beside the reference's."""
    metrics = report.loaded[name]["metrics"]
    rows = [[split, fmt(metrics[split]["loss"]), fmt(metrics[split]["accuracy"]),
             reference.result_text(name, split, "loss"), reference.result_text(name, split)] for split in SPLITS]
    doc.table(["split", report.label(name, "loss (ours)"), report.label(name, "accuracy (ours)"), "loss (reference)",
               "accuracy (reference)"], rows, align="lrrrr")
    facts = run_facts(metrics)
    config = report.loaded[name]["config"]
    doc.paragraph(f"{facts[:1].upper()}{facts[1:]}. Data: {data_text(config)}; {machine(config)}.")


def layer_table(doc: Document, config: dict, compact: bool = False, caption: str = "") -> None:
    model = config.get("model", {})
    if not isinstance(model, dict) or not model.get("repr"):
        doc.paragraph("The run's config.json holds no layer list (written by an older version).")
        return
    parameters = model.get("parameters")
    count = f"{parameters:,} parameters" if isinstance(parameters, int) else ""
    trainable = model.get("trainable_parameters")
    if isinstance(trainable, int) and isinstance(parameters, int) and trainable != parameters:
        count += f", {trainable:,} of them trained"
    doc.table(["layer", "layer type", "filters / units", "activation"], reference_form(model["repr"], compact),
              align="llrl", caption=f"{caption}{': ' if caption and count else ''}{count}")


# The settings a TA compares first, in this order; then the task's own (those it adds to the shared flags).
CORE = ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "early_stop_count", "augment")
SHOWN_ELSEWHERE = {"seed", "seeds", "subset", "max_steps", "validation_fraction", "validations_per_epoch",
                   "track_test", "precision"}


def settings_rows(config: dict) -> dict:
    """setting -> value as the run was trained (its config.json, not the script's current defaults)."""
    settings = config.get("settings", {})
    names = [k for k in CORE if k in settings] + sorted(
        k for k in settings if is_the_experiment(k) and k not in CORE and k not in SHOWN_ELSEWHERE
        and settings[k] is not None)
    return {name: settings[name] for name in names}


def value_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def hyperparameters(doc: Document, report: Report, names: list[str], caption: str) -> None:
    """The settings each run was trained with beside the reference's (reference.HYPERPARAMETERS)."""
    columns = {name: settings_rows(report.loaded[name]["config"]) for name in names if name in report.loaded}
    if not columns:
        return
    given = {name: reference.HYPERPARAMETERS[name].value for name in columns if name in reference.HYPERPARAMETERS}
    keys = list(dict.fromkeys(k for rows in columns.values() for k in rows))
    header = ["setting", *(report.label(n, f"{BY_NAME[n].label} (ours)" if len(names) > 1 else "ours")
                           for n in columns)]
    if len(given) == len(columns) and all(values == next(iter(given.values())) for values in given.values()):
        references = {"reference": next(iter(given.values()))}  # the same for every run shown: one column
    else:
        references = {f"{BY_NAME[n].label} (reference)": values for n, values in given.items()}
    header += list(references)
    rows = []
    for key in keys:
        row = [SETTING_NAMES.get(key, key.replace("_", " ")), *(value_text(columns[n].get(key, "-")) for n in columns)]
        row += [value_text(given_values[key]) if key in given_values else reference.NOT_GIVEN
                for given_values in references.values()]
        rows.append(row)
    for label, pick in (("seed", lambda c: c.get("settings", {}).get("seed", "?")),
                        ("device, precision", machine),
                        ("images (train / validation / test)", lambda c: " / ".join(
                            f"{c.get('data', {}).get(f'{s}_images', '?'):,}" if isinstance(
                                c.get("data", {}).get(f"{s}_images"), int) else "?" for s in SPLITS))):
        rows.append([label, *(str(pick(report.loaded[n]["config"])) for n in columns)]
                    + [""] * len(references))
    align = "l" + "r" * (len(header) - 1)
    if len(header) == 2 and len(rows) > 8:  # one run, nothing beside it: two settings a row, half the height
        half = -(-len(rows) // 2)
        rows = [[*rows[i], *(rows[i + half] if i + half < len(rows) else ["", ""])] for i in range(half)]
        header, align = header * 2, align * 2
    doc.table(header, rows, align=align, caption=caption)


# ---------------------------------------------------------------- title, banner, summary

def front_matter(doc: Document, report: Report) -> None:
    doc.heading(1, report.answers.title)
    if has_text(report.answers.front):
        doc.add("answer", report.answers.front, style="titleblock")
    assignment = [entry.name for entry in RUNS]
    not_real_runs = [f"{BY_NAME[name].title} ({'; '.join(report.notes(name))})" for name in assignment
                     if report.found[name]["run"] and report.notes(name)]
    by_state = {state: [BY_NAME[name].title for name in assignment if report.found[name]["state"] == state]
                for state in (MISSING, BROKEN)}
    random_figures = [name for name, (png, _) in report.visuals.items()
                      if png and "random weights" in (figures.saved_title(png) or "")]
    parts = []
    if not_real_runs:
        parts.append(f"{len(not_real_runs)} run(s) are not the real thing, and their numbers are marked wherever they "
                     f"are shown: {'; '.join(not_real_runs)}")
    if random_figures:
        parts.append(f"{' and '.join(random_figures)} drawn with random weights")
    if by_state[MISSING]:
        parts.append(f"not run yet: {', '.join(by_state[MISSING])}")
    if by_state[BROKEN]:
        parts.append(f"unusable (damaged files): {', '.join(by_state[BROKEN])}")
    if parts:
        doc.paragraph(f"**Not the final report.** {'. '.join(p[:1].upper() + p[1:] for p in parts)}. "
                      "`python report.py --train-missing` trains what is missing or not real.", style="banner")
    sources = sorted({data_text(run["config"]) for run in report.loaded.values()})
    doc.paragraph(f"Written by `python report.py` from the run folders in `{report.runs_dir.name}/` (no training). "
                  f"Each number of ours stands beside the reference's, {reference.DESCRIPTION}, where it gives one "
                  f"(\"{reference.NOT_GIVEN}\" where it does not). Our data: "
                  f"{'; '.join(sources) if sources else 'no finished run yet'}: a JPEG copy of CIFAR-10 (quality ~75), "
                  "not bit-identical to the original, so expect our accuracies about 3 points below the reference's "
                  "for the same network. Figures 1-7 are numbered as the reference numbers them.")
    rows = []
    for entry in RUNS:
        item = report.found[entry.name]
        metrics = (item["run"] or {}).get("metrics") if item["state"] == FINISHED else None
        test = (metrics or {}).get("test", {})
        rows.append([entry.title, state_text(item), fmt(test.get("accuracy")) if metrics else "",
                     reference.result_text(entry.name, "test"), fmt(test.get("loss")) if metrics else "",
                     reference.result_text(entry.name, "test", "loss"), run_facts(metrics) if metrics else ""])
    doc.table(["run", "state", "test acc (ours)", "test acc (reference)", "test loss (ours)", "test loss (reference)",
               "checkpoint"], rows, align="llrrrrl", caption="Summary")


# ---------------------------------------------------------------- Task 1

def matrix_table(doc: Document, matrix, caption: str, blank: str = "") -> None:
    columns = max(len(row) for row in matrix)
    doc.table([str(c + 1) for c in range(columns)], [[blank if v is None else v for v in row] for row in matrix],
              align="r" * columns, caption=caption)


def task1(doc: Document, report: Report) -> None:
    import task1 as theory

    ours = theory.answers()
    doc.heading(2, "Task 1: theory", anchor="task1")
    doc.paragraph("Computed by `python task1.py` with real torch layers (the convolution also by a plain loop), beside "
                  "the reference's answers.")
    question(doc, "1a")
    doc.paragraph(f"The image convolved with the kernel, {reference.PADDING_1A.value}, stride 1 (the kernel is "
                  "symmetric, so convolution and cross-correlation agree).")
    doc.group()
    number = figure_number("1a")
    matrix_table(doc, theory.IMAGE, f"Figure {number}a: image I")
    matrix_table(doc, theory.LAPLACIAN, f"Figure {number}b: kernel K")
    matrix_table(doc, ours["1a"], f"Figure {number}c: I * K (ours)")
    matrix_table(doc, reference.CONVOLUTION_AS_PRINTED.value, f"Figure {number}c as the reference printed it")
    doc.end_group()
    row, column = reference.STRAY
    same = ours["1a"] == reference.convolution_result()
    doc.paragraph(f"The reference's table, as its text prints it, has a sixth column: blank in rows 1 and 3, a stray "
                  f"{reference.CONVOLUTION_AS_PRINTED.value[row][column]} in row {row + 1} (the table lost its "
                  f"alignment when the report was converted from a PDF). Without that column the reference's result "
                  f"{'equals ours' if same else 'DIFFERS from ours'}.")
    answer(doc, report, "1a")

    question(doc, "1b")
    demo = ours["1b"]
    changed, values, everywhere = demo["changed"], demo["values"], demo["everywhere"]
    doc.paragraph(f"A dark {len(demo['image'])}x{len(demo['image'])} image with a bright 3x3 square, and the same "
                  f"image moved one pixel to the right: the shift changes {changed['input']} of {values['input']} "
                  f"pixels, {changed['convolution']} of the {values['convolution']} outputs of a 3x3 convolution "
                  f"(the 1a kernel), and {changed['max pooling']} of the {values['max pooling']} outputs of 2x2 max "
                  f"pooling (stride 2), which are:")
    doc.group()
    matrix_table(doc, demo["pooled"], "max pooling of the image")
    matrix_table(doc, demo["pooled_shifted"], "max pooling of the shifted image")
    doc.end_group()
    doc.paragraph(f"Over all {everywhere['places']} places of the square, the pooled output stays the same in "
                  f"{everywhere['pooled_identical']} and keeps {everywhere['pooled_kept']:.0%} of its values on "
                  f"average, the convolution's {everywhere['convolved_kept']:.0%}: max pooling answers a small shift "
                  f"almost as it answers the original. Reference: {quote(reference.MAX_POOLING)}.")
    answer(doc, report, "1b")

    asked = {"1c": "padding that keeps a 32x32 input's size with a 5x5 kernel, stride 1",
             "1d": "kernel size that takes 512x512 to 504x504 without padding, stride 1",
             "1e": "size after 2x2 max pooling, stride 2, of that 504x504 output",
             "1f": "size after a 3x3 convolution, no padding, stride 1, of the pooled maps"}
    units = {"1c": "", "1d": "x{0}", "1e": "x{0}", "1f": "x{0}"}
    for key, text in asked.items():
        question(doc, key)
        value, theirs = ours[key], theory.REFERENCE[key]
        shown = f"{value}{units[key].format(value)}"
        doc.paragraph(f"The {text}: **{shown}** (reference: {theirs}{units[key].format(theirs)}"
                      f"{'' if value == theirs else '; DIFFERS'}).")
        answer(doc, report, key)

    question(doc, "1g")
    rows = [[name, description, f"{count:,}", f"{theirs:,}" if theirs is not None else ""]
            for (name, description, count), theirs in zip(ours["1g_layers"], theory.REFERENCE["1g"] + [None] * 10)]
    rows.append(["total", "", f"**{sum(ours['1g']):,}**", f"{sum(theory.REFERENCE['1g']):,}"])
    doc.table(["layer", "weights + biases", "parameters (ours)", "reference"], rows, align="llrr",
              caption="The Task 2 network's parameters, counted from task2.Task2Model")
    answer(doc, report, "1g")


# ---------------------------------------------------------------- Task 2

def task2(doc: Document, report: Report) -> None:
    doc.heading(2, "Task 2: a first convolutional network", anchor="task2")
    question(doc, "2a")
    if report.found["task2"]["state"] != FINISHED:
        status_paragraph(doc, report, "task2")
    curves(doc, report, "task2", figure_number("2a"),
           "Task 2, loss and accuracy (the star marks the checkpoint the tables show)")
    if "task2" in report.loaded:
        config = report.loaded["task2"]["config"]
        layer_table(doc, config, caption="The network")
        hyperparameters(doc, report, ["task2"], "Hyperparameters (the reference gives none for Task 2)")
    answer(doc, report, "2a")
    question(doc, "2b")
    if "task2" in report.loaded:
        doc.paragraph("The best checkpoint (lowest validation loss) evaluated on the whole training, validation and "
                      "test sets.")
        split_table(doc, report, "task2")
    else:
        doc.paragraph("Needs the Task 2 run (2a).")
    answer(doc, report, "2b")


# ---------------------------------------------------------------- Task 3

def task3(doc: Document, report: Report, task3_messages: list[str]) -> None:
    doc.heading(2, "Task 3: deeper and wider networks", anchor="task3")
    models = ("task3_model1", "task3_model2")
    question(doc, "3a")
    given = {name: reference.CONVOLUTIONS[name].value for name in models}
    doc.table(["", *(f"{BY_NAME[n].label} (ours and the reference's)" for n in models)],
              [[key, *(value_text(given[n][key]) for n in models)] for key in given[models[0]]], align="lrr",
              caption="Filters and pooling, as the reference's 3a gives them (our scripts build them so)")
    for name in models:
        if report.found[name]["state"] != FINISHED:
            status_paragraph(doc, report, name)
    doc.group()
    for name in models:
        if name in report.loaded:
            layer_table(doc, report.loaded[name]["config"], caption=BY_NAME[name].label)
    doc.end_group()
    hyperparameters(doc, report, [n for n in models if n in report.loaded], "Hyperparameters")
    answer(doc, report, "3a")

    question(doc, "3b")
    comparison = Path(report.plot_dir) / "task3_comparison.png"
    if all(n in report.loaded for n in models):
        one, two = (report.loaded[n]["metrics"] for n in models)
        rows = []
        for measure in ("loss", "accuracy"):
            for split in SPLITS:
                rows.append([f"{SPLIT_NAMES[split]} {measure.capitalize()}", fmt(one[split][measure]),
                             fmt(two[split][measure]), *(reference.result_text(n, split, measure) for n in models)])
        doc.table(["", report.label(models[0], "Model 1 (ours)"), report.label(models[1], "Model 2 (ours)"),
                   "Model 1 (reference)", "Model 2 (reference)"], rows, align="lrrrr")
        gap = 100 * (one["test"]["accuracy"] - two["test"]["accuracy"])
        theirs = 100 * (reference.result(models[0], "test") - reference.result(models[1], "test"))
        doc.paragraph(f"Model 1 {'beats' if gap > 0 else 'trails'} Model 2 by {abs(gap):.1f} points of test accuracy "
                      f"(reference: Model 1 ahead by {theirs:.1f} points){report.sentence_mark(*models)}.")
        if any(str(comparison) in m for m in task3_messages):
            doc.figure(comparison, marked(f"Figure {figure_number('3b')}: Model 1 and Model 2, loss and accuracy",
                                          [f"{BY_NAME[n].label}: {'; '.join(report.notes(n))}" for n in models
                                           if report.notes(n)]))
    else:
        doc.paragraph("Needs both models (3a).")
    answer(doc, report, "3b")

    question(doc, "3c")
    deepening = Path(report.plot_dir) / "task3c_deepening.png"
    pair = ("task3c_before", "task3_model1")
    if report.found["task3c_before"]["state"] != FINISHED:
        status_paragraph(doc, report, "task3c_before")
    if all(n in report.loaded for n in pair):
        before, after = (report.loaded[n]["metrics"]["test"]["accuracy"] for n in pair)
        doc.table(["network", "test accuracy (ours)", "test accuracy (reference)"],
                  [[report.label("task3c_before", "before deepening: one conv per stage"), fmt(before),
                    reference.NOT_GIVEN],
                   [report.label("task3_model1", "after: Model 1, two convs per stage"), fmt(after),
                    quote(reference.DEEPENED)]], align="lrl")
        doc.paragraph(f"Doubling the conv layers took test accuracy from {before:.3f} to {after:.3f}: "
                      f"**{100 * (after - before):+.1f} points**{report.sentence_mark(*pair)}. The reference gives no "
                      f"accuracy before deepening; it says {quote(reference.DEEPENING_EFFECT)}.")
        if any(str(deepening) in m for m in task3_messages):
            doc.figure(deepening, marked(f"Figure {figure_number('3c')}: training, validation and test loss before "
                                         "and after deepening",
                                         [f"{BY_NAME[n].label}: {'; '.join(report.notes(n))}" for n in pair
                                          if report.notes(n)]))
    elif report.found["task3c_before"]["state"] == FINISHED:
        doc.paragraph("The comparison also needs Task 3 Model 1 (3a).")
    experiments(doc, report)
    answer(doc, report, "3c")

    question(doc, "3d")
    if report.found["task3d"]["state"] != FINISHED:
        status_paragraph(doc, report, "task3d")
    doc.paragraph(f"The reference: {quote(reference.BEST_MODEL)}; it gives no accuracy for it. Ours is a new recipe "
                  "trained from scratch in at most 10 epochs; what it changes against Model 1, and what each change "
                  "measured:")
    recipe_table(doc)
    curves(doc, report, "task3d", figure_number("3d"), "Task 3d, loss and accuracy")
    if "task3d" in report.loaded:
        split_table(doc, report, "task3d")
        layer_table(doc, report.loaded["task3d"]["config"], compact=True, caption="The network")
        hyperparameters(doc, report, ["task3d"], "The recipe's settings (docs/task3d.md says what each does)")
    answer(doc, report, "3d")


def experiments(doc: Document, report: Report) -> None:
    """Task 3c's experiments, each Model 1 with one change, in one table beside Model 1."""
    rows = []
    model1 = report.loaded.get("task3_model1")
    if model1:
        metrics = model1["metrics"]
        rows.append([report.label("task3_model1", "Model 1"), "", fmt(metrics["test"]["accuracy"]),
                     fmt(metrics["train"]["accuracy"] - metrics["test"]["accuracy"]), ""])
    missing = []
    for entry in EXPERIMENTS:
        item = report.found[entry.name]
        change = "`" + entry.command.removeprefix("python task3_model1.py ") + "`"
        finding = f"\"{reference.EXPERIMENTS[entry.experiment].value}\""
        if item["state"] == FINISHED:
            metrics = item["run"]["metrics"]
            rows.append([report.label(entry.name), change, fmt(metrics["test"]["accuracy"]),
                         fmt(metrics["train"]["accuracy"] - metrics["test"]["accuracy"]), finding])
        else:
            rows.append([entry.label, change, item["state"], "", finding])
            missing.append(entry)
    doc.table(["run", "change from Model 1", "test accuracy", "train - test accuracy", "the reference's words (3c)"],
              rows, align="llrrl", caption="Task 3c's other experiments")
    if missing:
        doc.paragraph(f"Each costs about what Model 1 does ({how_long(BY_NAME['task3_model1'])}; more filters about "
                      "three times that). To run the missing ones, one by one or all with `python report.py "
                      "--train-missing --with-experiments`:")
        doc.bullets([f"`{command_for(e, report.runs_dir)}`" for e in missing])


def recipe_table(doc: Document) -> None:
    """Task 3d's changes against Model 1 and what each bought, as docs/task3d.md measured them (one source)."""
    try:
        text = TASK3D_DOC.read_text(encoding="utf-8")
    except OSError:
        doc.paragraph("(docs/task3d.md, which holds the measurements, is not in this folder.)")
        return
    section = re.search(r"^## What each change bought\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    table = re.search(r"^\|.*?(?=\n\n|\Z)", section.group(1), flags=re.MULTILINE | re.DOTALL) if section else None
    if not table:
        doc.paragraph("(docs/task3d.md has no table of what each change bought.)")
        return
    lines = [line.strip().strip("|").split("|") for line in table.group(0).splitlines()]
    header, rows = [c.strip() for c in lines[0]], [[c.strip() for c in line] for line in lines[2:]]
    doc.table(header, rows, caption="From docs/task3d.md (its machines and seeds there)")


# ---------------------------------------------------------------- Task 4

def task4(doc: Document, report: Report) -> None:
    doc.heading(2, "Task 4: transfer learning with ResNet-18", anchor="task4")
    question(doc, "4a")
    if report.found["task4a"]["state"] != FINISHED:
        status_paragraph(doc, report, "task4a")
    hyperparameters(doc, report, ["task4a"], "Hyperparameters")
    curves(doc, report, "task4a", figure_number("4a"), "Task 4a, ResNet-18 fine-tuned on CIFAR-10, loss and accuracy")
    if "task4a" in report.loaded:
        split_table(doc, report, "task4a")
    answer(doc, report, "4a")
    captions = {"task4b": (figure_number("4b"), "4b",
                           f"the first convolution's filters {reference.FILTER_INDICES.value} (the ones the reference "
                           "chose) and their activations on the photo"),
                "task4c": (figure_number("4c"), "4c",
                           f"the first {reference.LAST_LAYER_MAPS.value} activation maps of the last convolutional "
                           "stage (the reference numbers this figure 7 too)")}
    for name in VISUALISATIONS:
        number, key, caption = captions[name]
        question(doc, key)
        figure, what = report.visuals[name]
        doc.paragraph(what)
        if figure:
            title = figures.saved_title(figure) or ""
            if "random weights" in title:
                doc.paragraph(f"**Not the real thing**: drawn with random weights; `python {name}.py` with the "
                              "ImageNet weights draws the real figure.")
            doc.figure(figure, f"Figure {number}: {caption}" + (f" ({title})" if title else ""))
        answer(doc, report, key)


# ---------------------------------------------------------------- the appendix

def appendix(doc: Document, report: Report) -> None:
    number = reference.FIRST_EXTRA_FIGURE
    confusion = [(name, path) for name, path in report.drawn["confusion"].items()]
    if confusion:
        doc.heading(2, "Appendix: test-set confusion matrices", anchor="confusion")
        doc.group()
        for name, path in confusion:
            doc.figure(path, marked(f"Figure {number}: {BY_NAME[name].title}", report.notes(name)), size="half")
            number += 1
        doc.end_group()
        pairs = []
        for name in report.drawn["confusion"]:
            metrics = report.loaded[name]["metrics"]
            worst = figures.most_confused(metrics["test"]["confusion"], list(metrics["test"]["per_class_accuracy"]), 1)
            if worst:
                true, predicted, count = worst[0]
                pairs.append(f"{BY_NAME[name].label}: {true} taken for {predicted} ({count} images)")
        if pairs:
            doc.paragraph("Most confused: " + "; ".join(pairs) + ".")
    seeds = seed_groups(report.folders)
    if seeds:
        doc.heading(2, "Appendix: several seeds", anchor="seeds")
        doc.paragraph("Runs that differ only by their seed (`--seeds`): mean ± sample standard deviation over n runs.")
        doc.table(["run", "n", "seeds", "train acc", "validation acc", "test acc", "test loss"], seeds,
                  align="lrlrrrr")
    others = other_runs(report.folders, {name for name in BY_NAME if not name.startswith("task3")} | {None})
    if others:
        doc.heading(2, "Appendix: other runs", anchor="others")
        doc.table(["folder", "task", "differs from the recipe in", "seed", "test acc", "test loss"], others,
                  align="lllrrr")
    absent = [item["message"] for name, item in report.found.items()
              if item["state"] != FINISHED and not BY_NAME[name].experiment]
    if absent or report.problems:
        doc.heading(2, "Appendix: missing, unfinished or unusable runs", anchor="missing")
        doc.bullets(absent + [p for p in report.problems if p not in absent])
    if report.loaded:
        doc.heading(2, "Appendix: the runs", anchor="runs")
        doc.table(["run", "folder", "data", "machine, precision", "torch", "not the real thing"],
                  [[BY_NAME[name].title, f"`{report.runs_dir.name}/{name}`", data_text(run["config"]),
                    machine(run["config"]), run["config"].get("versions", {}).get("torch", "?"),
                    "; ".join(caveats(run["config"])) or "no"] for name, run in report.loaded.items()])
    extra = [(heading, text) for heading, text in report.answers.others if has_text(text)]
    if extra:
        doc.heading(2, "Further notes", anchor="notes")
        for heading, text in extra:
            doc.heading(3, heading)
            doc.answer(text, level=3)


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
        notes = sorted({note for run in by_seed.values() for note in caveats(run["config"])})
        rows.append([marked(entry.title if entry else str(name), notes), len(by_seed),
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
                     marked(differences(run), caveats(run["config"])), settings.get("seed", "?"),
                     fmt(run["metrics"]["test"]["accuracy"]), fmt(run["metrics"]["test"]["loss"])])
    return rows


def finished_folders(runs_dir: Path, found: dict) -> tuple[dict, list[str]]:
    """Every finished run folder in runs_dir (folder name -> run), and damaged ones found on the way."""
    folders, problems = {}, []
    if not Path(runs_dir).is_dir():
        return folders, problems
    for folder in sorted(Path(runs_dir).iterdir()):
        if not (folder / FILES.METRICS).exists():
            continue
        item = found.get(folder.name)
        if item and item["state"] in (FINISHED, BROKEN):
            if item["state"] == FINISHED:
                folders[folder.name] = item["run"]
            continue
        try:
            folders[folder.name] = read_run(folder)
        except UserError as error:
            problems.append(f"unusable: {error}")
    return folders, problems


# ---------------------------------------------------------------- the whole document

def document(report: Report, task3_messages: list[str]) -> Document:
    """Every section, in the assignment's order."""
    hide = sorted({str(p) for p in (Path(report.runs_dir).resolve().parent, Path(report.runs_dir).parent,
                                    Path(report.plot_dir).resolve(), ROOT, Path.home())
                   if str(p) not in ("", ".", os.sep)}, key=len, reverse=True)
    doc = Document(report.plot_dir, hide)
    front_matter(doc, report)
    task1(doc, report)
    task2(doc, report)
    task3(doc, report, task3_messages)
    task4(doc, report)
    appendix(doc, report)
    return doc
