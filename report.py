"""The assignment's report from saved run folders, without training: every figure, plots/report.md (figures
linked relatively, so plots/ can be zipped or moved) and plots/report.html (one self-contained file: figures
inlined, no network, no script; prints as a report on A4 or Letter).

    python report.py                       # seconds: reads runs/<script>/ and answers.md, writes plots/
    python report.py --runs-dir other_runs --plot-dir other_plots
    python report.py --train-missing       # first trains every run that is missing or not the real thing

The document follows the assignment, question by question (1a-1g, 2a-2b, 3a-3d, 4a-4c): what the code answers,
every number beside the reference report's ("not given" where it has none), and your own answer to the question
from answers.md (written with a heading per question the first time, never changed by report.py). A missing run
is a paragraph with the command that makes it; a run that is not the real thing (smoke run, random weights,
still training...) says so wherever its numbers are shown, and a banner at the top says the report is not final.
A run whose files are damaged is listed with the file named, everything else is still produced, and the exit
code is then 1.
"""
from __future__ import annotations

import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import argparse
import shlex
import sys
from pathlib import Path

import cli
import report_answers
import report_training
from report_figures import draw_all, visualisations
from report_runs import BY_NAME, EXPERIMENTS, FINISHED, RUNS, not_real, read_all
from report_sections import Report, document, finished_folders
from run_folder import PLOT_DIR, ROOT, RUNS_DIR
from task3_compare import task3_outputs
from trainer import TrainingInterrupted
from utils import UserError, check_writable, write_text

ANSWERS = ROOT / "answers.md"


def build(runs_dir: Path, plot_dir: Path, answers: report_answers.Answers, image: Path | None = None) -> Report:
    """Read every run, draw every figure; the Report the sections are written from."""
    runs_dir, plot_dir = Path(runs_dir), Path(plot_dir)
    found = read_all(runs_dir, (*RUNS, *EXPERIMENTS))
    problems = [item["message"] for item in found.values() if item["state"] == "broken"]
    drawn = draw_all(RUNS, found, plot_dir)
    folders, folder_problems = finished_folders(runs_dir, found)
    return Report(runs_dir, plot_dir, found, drawn, folders, answers, visualisations(plot_dir, image),
                  problems + [p for p in folder_problems if p not in problems])


def task3_figures(report: Report) -> list[str]:
    try:
        return task3_outputs(report.runs_dir, report.plot_dir, report.loaded)
    except UserError as error:
        if not any(str(error) in problem for problem in report.problems):
            report.problems.append(str(error))
        return []


def summary(report: Report, paths: tuple[Path, Path]) -> str:
    """What the terminal shows: where the report is, what is in it, what is not real, what is missing (with
    the command that makes it)."""
    lines = [f"wrote {paths[0]} and {paths[1]}"]
    finished = [BY_NAME[n].title for n, item in report.found.items() if item["state"] == FINISHED
                and not BY_NAME[n].experiment]
    lines.append(f"runs: {len(finished)} of {len(RUNS)} finished" + (f" ({', '.join(finished)})" if finished else ""))
    for name, item in report.found.items():
        entry = BY_NAME[name]
        notes = not_real(item)
        if item["state"] == FINISHED and notes:
            lines.append(f"  not the real thing: {entry.title} ({'; '.join(notes)})")
        elif item["state"] != FINISHED and not entry.experiment:
            lines.append(f"  {item['message']}")
    experiments = [e for e in EXPERIMENTS if report.found[e.name]["state"] == FINISHED]
    lines.append(f"Task 3c experiments: {len(experiments)} of {len(EXPERIMENTS)} run"
                 + ("" if len(experiments) == len(EXPERIMENTS) else
                    " (their commands are in the report; --train-missing --with-experiments trains them)"))
    for name, (figure, what) in report.visuals.items():
        if figure is None:
            lines.append(f"  {name}: {what}")
    lines.append(report.answers.note)
    return "\n".join(lines)


def main(argv=None):
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR,
                        help="folder holding one run directory per script (default: runs/)")
    parser.add_argument("--plot-dir", type=Path, default=PLOT_DIR,
                        help="where figures, report.md and report.html are written (default: plots/)")
    parser.add_argument("--answers", type=Path, default=ANSWERS,
                        help="your answers, a Markdown section per question; written with the headings when "
                             "missing, never changed (default: answers.md)")
    parser.add_argument("--image", type=Path, default=None,
                        help="photo for the Task 4b/4c figures (default: task4b.py's, images/zebra.jpg)")
    report_training.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.runs_dir.exists() and not args.runs_dir.is_dir():
        raise UserError(f"--runs-dir {args.runs_dir} is a file; it must be the folder that holds one run folder "
                        "per script (default: runs/)")
    # A fresh checkout has no runs/ yet: the report then lists every command to run.
    if not args.runs_dir.is_dir() and args.runs_dir.resolve() != RUNS_DIR.resolve() and not args.train_missing:
        raise UserError(f"no run directories: {args.runs_dir} does not exist; train first "
                        "(e.g. python task2.py) or point --runs-dir at the folder holding them")
    report_answers.check_answers_path(args.answers)
    check_writable(args.plot_dir)
    failed = []
    if args.train_missing:
        failed = report_training.train_missing(args, argv if argv is not None else sys.argv[1:])
    answers = report_answers.read_or_create(args.answers)
    try:
        report = build(args.runs_dir, args.plot_dir, answers, args.image)
        doc = document(report, task3_figures(report))
        paths = Path(args.plot_dir) / "report.md", Path(args.plot_dir) / "report.html"
        write_text(doc.markdown(), paths[0])
        write_text(doc.html(answers.title), paths[1])
    except KeyboardInterrupt:
        raise TrainingInterrupted("interrupted while writing the report: no run was changed; run "
                                  f"`python report.py {shlex.join(argv if argv is not None else sys.argv[1:])}` "
                                  "again to write it") from None
    print(summary(report, paths), file=sys.stderr)
    if failed or report.problems:
        raise UserError("; ".join(
            ([f"{len(failed)} run(s) failed to train ({', '.join(failed)}; see above)"] if failed else [])
            + ([f"{len(report.problems)} run(s) could not be read (listed above and in {paths[0]})"]
               if report.problems else [])) + "; the rest of the report was written")


if __name__ == "__main__":
    cli.main(main)
