"""What a new user reads first: --help that leads with the task, and a smoke run that says when
--max-steps cannot be reached."""
import re

import pytest
import torch

import cli
import runs
import task2
import task3_model1
import task3d
from helpers import outcome, task2_args


def parser_of(module, monkeypatch):
    """The parser a task script's main() builds (stopped before it parses anything)."""
    built = []

    def keep(parser, argv=None):
        built.append(parser)
        raise SystemExit(0)
    monkeypatch.setattr(cli, "parse", keep)
    with pytest.raises(SystemExit):
        module.main([])
    return built[0]


def flag_entries(help_text: str) -> dict:
    """Each flag's entry in --help: its first option string -> the text of the entry."""
    entries, current = {}, None
    for line in help_text.splitlines():
        match = re.match(r"  (-\S+)", line)
        if match:
            current = match.group(1).rstrip(",")
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("module", [task2, task3d, task3_model1])
def test_every_flag_has_a_help_text_and_its_default_once(module, monkeypatch):
    parser = parser_of(module, monkeypatch)
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
    text = parser.format_help()
    assert "(default: None)" not in text
    entries = flag_entries(text)
    assert {action.option_strings[0] for action in parser._actions} <= set(entries)
    for flag, entry in entries.items():
        assert entry.count("(default") <= 1, entry


def test_task3d_help_lists_its_recipe_before_the_shared_flags(monkeypatch):
    text = parser_of(task3d, monkeypatch).format_help()
    flags = list(flag_entries(text))
    assert flags[:2] == ["-h", "--nesterov"]
    recipe = ["--widths", "--depths", "--tta", "--whitening-images", "--whitening-bias-epochs", "--label-smoothing",
              "--crop-padding", "--lookahead-every", "--lookahead-decay"]
    assert max(flags.index(f) for f in recipe) < flags.index("--epochs") < flags.index("--data-dir")
    # --augment in Task 3d is Task 3d's augmentation, not Task 2's padded crop.
    augment = flag_entries(text)["--augment"]
    assert "alternate" in augment and "mirrored" in augment and "4-pixel" not in augment


def test_task_flags_come_first_and_the_task_comes_before_the_flags(monkeypatch):
    text = parser_of(task3_model1, monkeypatch).format_help()
    flags = list(flag_entries(text))
    assert flags.index("--activation") < flags.index("--epochs")
    task2_help = parser_of(task2, monkeypatch).format_help()
    assert task2_help.index("Task 2: a small CNN") < task2_help.index("--epochs")


def test_help_from_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        task3d.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.index("task 3d recipe") < out.index("hyperparameters")


@pytest.mark.slow
def test_a_smoke_run_that_cannot_reach_max_steps_says_so_at_the_start(folder_data, tmp_path, capsys):
    # --subset 160: 160 training images, batch 16: 10 steps per epoch, so one epoch ends the run at step 10.
    args = task2_args(folder_data, tmp_path / "run", tmp_path / "plots", "--epochs", "1", "--max-steps", "500")
    code, err = outcome(task2.main, list(map(str, args)), capsys)
    assert code == 0
    notes = [line for line in err.splitlines() if "--max-steps 500" in line]
    assert len(notes) == 1 and "--epochs 1" in notes[0] and "10 steps" in notes[0], err
    assert err.index(notes[0]) < err.index("Task 2: ")  # before the line that starts the training


@pytest.mark.slow
def test_a_reachable_max_steps_says_nothing(folder_data, tmp_path, capsys):
    args = task2_args(folder_data, tmp_path / "run", tmp_path / "plots", "--max-steps", "3")
    code, err = outcome(task2.main, list(map(str, args)), capsys)
    assert code == 0 and "--max-steps" not in err


def test_each_setting_has_one_role_that_decides_what_a_run_is_compared_on(monkeypatch, folder_data, tmp_path):
    import settings as schema
    import trainer
    args = parser_of(task2, monkeypatch).parse_args([])
    args.flags_given = []
    settings = runs.run_settings(args)
    assert {"seed", "name", "validation_fraction", "augment", "subset"} <= set(settings)
    assert not {"data_dir", "device", "compile", "run_dir", "plot_dir", "resume", "seeds",
                "flags_given"} & set(settings)
    assert [schema.role(k) for k in ("epochs", "max_steps", "cuda_graphs", "compile", "run_dir", "lr")] == [
        schema.LENGTH, schema.LENGTH, schema.HOW, schema.HOW, schema.COMMAND, schema.EXPERIMENT]
    config = schema.TrainConfig(precision="fp32")
    signature = trainer.Trainer(torch.nn.Linear(2, 2), None, None, None, config, tmp_path, "cpu",
                                settings=settings).signature
    assert {"lr", "batch_size", "precision", "seed", "model"} <= set(signature)
    assert not {"epochs", "max_steps", "early_stop_count", "cuda_graphs", "channels_last", "log_every"} & set(signature)


# In a fresh process: a setting's role, and what runs.run_settings calls the experiment, before and after the
# command line's module is imported (report.py reads runs without building a parser).
ROLES_BEFORE_AND_AFTER_CLI = """
import argparse, json, sys
sys.path.insert(0, {root!r})
import runs, settings
names = ("device", "run_dir", "resume", "plot_dir", "flags_given", "data_dir_from", "compile", "seed")
args = argparse.Namespace(device="cpu", run_dir="runs/x", resume=True, plot_dir="plots", flags_given=[], seed=3,
                          data_dir_from="--data-dir", compile=False, lr=0.1)
before = [settings.role(name) for name in names], runs.run_settings(args)
import cli
after = [settings.role(name) for name in names], runs.run_settings(args)
print(json.dumps({{"before": before, "after": after}}))
"""


@pytest.mark.slow
def test_a_settings_role_is_the_same_whatever_was_imported():
    import json
    import subprocess
    import sys

    from helpers import ROOT
    done = subprocess.run([sys.executable, "-c", ROLES_BEFORE_AND_AFTER_CLI.format(root=str(ROOT))], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["before"] == seen["after"] == [["how", "command", "command", "how", "command", "command", "how",
                                                "experiment"], {"seed": 3}]


@pytest.mark.parametrize("module, default", [(task2, True), (task3_model1, True), (task3d, False)])
def test_each_script_says_whether_it_captures_cuda_graphs_by_default_and_why(module, default, monkeypatch):
    parser = parser_of(module, monkeypatch)
    assert parser.get_default("cuda_graphs") is default
    entry = flag_entries(parser.format_help())["--cuda-graphs"]
    assert entry.endswith(f"(default: {'on' if default else 'off'})")
    assert ("has trained on a GPU" in entry) is default and ("Muon" in entry) is not default


@pytest.mark.slow
def test_task4a_help_example_runs_offline(folder_data, tmp_path, monkeypatch, capsys):
    """The smoke run --help shows trains with what a fresh machine has: no ImageNet weights, no network."""
    import task4a
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights-here"))
    text = parser_of(task4a, monkeypatch).format_help()
    example = re.search(r"python task4a\.py (--weights none[^\n]*)\n\s+# a smoke run: ([^\n]+)", text)
    assert example and "no download" in example.group(2) and re.search(r"\d+ s", example.group(2))
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights-here"))
    argv = example.group(1).split()
    argv[argv.index("--run-dir") + 1] = str(tmp_path / "smoke")
    code, err = outcome(task4a.main, [*argv, "--data-dir", folder_data, "--device", "cpu", "--plot-dir", tmp_path],
                        capsys)
    assert code == 0, err
    assert (tmp_path / "smoke" / "metrics.json").is_file()
