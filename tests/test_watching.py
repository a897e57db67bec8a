"""Watching and understanding a run: metrics.csv, the live figure, per-class results, several seeds,
deterministic runs, evaluate-only, TensorBoard."""
import csv
import importlib.util

import pytest
import torch

import cli
import dataloaders
import run_folder
import watching
import task2
import task3d
import utils
from run_folder import read_run
from helpers import exit_code, fail_at_step, one_line_error, outcome, seeds_args, snapshot, task2_args
from settings import TrainConfig
from trainer import Trainer


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny(folder_data, tmp_path_factory):
    """A finished tiny Task 2 run (four epochs, eight validations), in-process."""
    base = tmp_path_factory.mktemp("tiny")
    assert exit_code(task2.main, *task2_args(folder_data, base / "run", base / "plots")) == 0
    return base / "run"


@pytest.mark.slow
def test_metrics_csv_has_a_row_per_validation(tiny):
    table, history = rows(tiny / "metrics.csv"), read_run(tiny)["history"]
    assert list(table[0]) == list(watching.CSV_COLUMNS)
    assert [int(r["step"]) for r in table] == [p["step"] for p in history["validation"]] == list(range(5, 41, 5))
    assert [float(r["validation_loss"]) for r in table] == [p["loss"] for p in history["validation"]]
    assert all(float(r["learning_rate"]) == 0.05 and float(r["images_per_s"]) > 0 for r in table)
    steps, losses = history["train_loss"]["steps"], history["train_loss"]["values"]
    assert float(table[1]["train_loss"]) == pytest.approx(sum(losses[5:10]) / 5)   # mean since the last row
    elapsed = [float(r["elapsed_seconds"]) for r in table]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert history["learning_rate"]["steps"] == steps and set(history["learning_rate"]["values"]) == {0.05}


def test_a_schedule_shows_in_the_learning_rate_column(folder_data, tmp_path):
    loaders = dataloaders.load_cifar10(16, data_dir=folder_data, download=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    trainer = Trainer(model, *loaders, TrainConfig(epochs=4, lr=0.5), tmp_path, "cpu", lr_schedule=task3d.lr_factor,
                      callbacks=[watching.MetricsCSV(tmp_path / "metrics.csv")])
    trainer.train()
    rates = [float(r["learning_rate"]) for r in rows(tmp_path / "metrics.csv")]
    assert rates[0] < rates[1] and max(rates) <= 0.5 and rates[-1] < max(rates)   # warm-up, then decay


def test_the_csv_continues_without_duplicates_after_resume(folder_data, tmp_path, monkeypatch):
    def trainer():
        loaders = dataloaders.load_cifar10(16, data_dir=folder_data, download=False)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
        return Trainer(model, *loaders, TrainConfig(epochs=3), tmp_path, "cpu",
                       callbacks=[watching.MetricsCSV(tmp_path / "metrics.csv")])

    interrupted = trainer()
    fail_at_step(monkeypatch, 20, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    monkeypatch.undo()
    before = rows(tmp_path / "metrics.csv")
    # a row for a validation past last.pt (written by a process killed before it saved) must not stay
    with open(tmp_path / "metrics.csv", "a") as handle:
        handle.write(",".join(["24", "1.5"] + ["9.9"] * 7) + "\n")
    resumed = trainer()
    resumed.resume()
    resumed.train()
    after = rows(tmp_path / "metrics.csv")
    steps = [int(r["step"]) for r in after]
    assert steps == [p["step"] for p in resumed.state.history["validation"]] and len(set(steps)) == len(steps)
    assert after[:len(before)] == before                          # the timings of earlier rows are kept
    assert all(r["validation_loss"] != "9.9" for r in after)


def test_the_figure_exists_after_the_first_validation(folder_data, tmp_path):
    loaders = dataloaders.load_cifar10(16, data_dir=folder_data, download=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    figure = tmp_path / "plots" / "live.png"
    seen = []

    class Look(watching.Callback):
        def after_validation(self, trainer, point):
            seen.append(figure.exists() and figure.stat().st_size > 10_000)

    trainer = Trainer(model, *loaders, TrainConfig(epochs=1), tmp_path, "cpu",
                      callbacks=[watching.LiveFigure(figure, "live"), Look()])
    trainer.train()
    assert seen[0] is True


def test_per_class_results_and_confusion_matrices(tiny):
    metrics = read_run(tiny)["metrics"]
    for split, size in (("validation", 30), ("test", 100)):
        matrix = torch.tensor(metrics[split]["confusion"])
        assert matrix.shape == (10, 10) and int(matrix.sum()) == size
        assert int(matrix.diagonal().sum()) / size == pytest.approx(metrics[split]["accuracy"])
        per_class = metrics[split]["per_class_accuracy"]
        assert list(per_class) == list(dataloaders.CLASSES)
        for index, name in enumerate(dataloaders.CLASSES):
            if matrix[index].sum():
                assert per_class[name] == pytest.approx(int(matrix[index, index]) / int(matrix[index].sum()))
    assert "confusion" not in metrics["train"]


@pytest.mark.slow
def test_seeds_run_one_folder_each_and_print_mean_and_spread(folder_data, tmp_path, capsys):
    base = tmp_path / "run"
    assert exit_code(task2.main, *seeds_args(folder_data, base, tmp_path / "plots"), "--max-steps", "5",
                     "--seeds", "3", "7") == 0
    out = capsys.readouterr().out
    assert "over 2 seeds (3, 7): mean ± sample std" in out and "test accuracy" in out
    results = {seed: read_run(tmp_path / f"run-seed{seed}") for seed in (3, 7)}
    assert {seed: r["config"]["settings"]["seed"] for seed, r in results.items()} == {3: 3, 7: 7}
    assert results[3]["metrics"]["test"] != results[7]["metrics"]["test"] and not base.exists()


def test_seed_summary_gives_mean_and_sample_std_and_every_value():
    result = lambda accuracy: {split: {"loss": 1.0, "accuracy": accuracy}  # noqa: E731
                               for split in ("train", "validation", "test")}
    text = cli.seed_summary({0: result(0.70), 1: result(0.72), 2: result(0.74)})
    assert "over 3 seeds (0, 1, 2)" in text
    assert "  test accuracy       0.7200 ± 0.0200   0.7000  0.7200  0.7400" in text   # the columns aligned


def test_one_seed_gives_its_values_and_no_spread():
    result = {split: {"loss": 1.0, "accuracy": 0.5} for split in ("train", "validation", "test")}
    text = cli.seed_summary({5: result})
    assert "nan" not in text and "±" not in text
    assert "over 1 seed (5): a spread needs two or more seeds" in text and "test accuracy       0.5000" in text


def test_an_interrupted_seeds_set_is_completed_with_the_same_command_plus_resume(folder_data, tmp_path, capsys,
                                                                                monkeypatch):
    base, plots = tmp_path / "run", tmp_path / "plots"
    command = [*seeds_args(folder_data, base, plots), "--max-steps", "8", "--lr", "0.02", "--seeds", "0", "1", "2"]
    fail_at_step(monkeypatch, 8 + 7, KeyboardInterrupt())  # seed 1 at its step 7, after its first validation
    assert exit_code(task2.main, *command) == 130
    monkeypatch.undo()
    seed0 = read_run(tmp_path / "run-seed0")["metrics"]
    held = [run_folder.status(tmp_path / f"run-seed{seed}") for seed in (0, 1, 2)]
    assert held == [run_folder.FINISHED, run_folder.UNFINISHED, run_folder.EMPTY]
    capsys.readouterr()
    # the same command again is refused (exit 2), saying how to go on
    code, stderr = outcome(task2.main, command, capsys)
    assert code == 2 and one_line_error(stderr) and "the same command plus --resume" in stderr
    # with --resume (the folder is enough: every run of the set is made with the settings of the set)
    assert exit_code(task2.main, "--run-dir", base, "--seeds", "0", "1", "2", "--resume", "--plot-dir", plots) == 0
    out = capsys.readouterr().out
    assert "over 3 seeds (0, 1, 2): mean ± sample std" in out
    finished = {seed: read_run(tmp_path / f"run-seed{seed}") for seed in (0, 1, 2)}
    assert {seed: (run["config"]["settings"]["seed"], run["config"]["settings"]["lr"], run["metrics"]["steps"])
            for seed, run in finished.items()} == {0: (0, 0.02, 8), 1: (1, 0.02, 8), 2: (2, 0.02, 8)}
    assert finished[0]["metrics"]["test"] == seed0["test"]          # read again, not trained again


def test_deterministic_is_recorded(folder_data, tmp_path, capsys):
    code, _ = outcome(task2.main, [*task2_args(folder_data, tmp_path / "run", tmp_path / "plots"), "--max-steps", "3",
                               "--deterministic"], capsys)
    assert code == 0
    config = read_run(tmp_path / "run")["config"]
    assert config["settings"]["deterministic"] is True and config["resolved"]["deterministic"] is True
    torch.use_deterministic_algorithms(False)  # the setting is process-wide; leave the others as they were
    torch.backends.cudnn.deterministic = False


def test_evaluate_only_reproduces_the_final_numbers_and_changes_nothing_else(folder_data, tiny, tmp_path, capsys):
    import shutil
    shutil.copytree(tiny, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    code, _ = outcome(task2.main, [*task2_args(folder_data, tmp_path / "run", tmp_path / "plots"), "--evaluate-only"],
                  capsys)
    assert code == 0
    after = snapshot(tmp_path / "run")
    assert {name: data for name, data in after.items() if name != "evaluation.json"} == before
    evaluation = utils.read_json(tmp_path / "run" / "evaluation.json")
    metrics = read_run(tiny)["metrics"]
    for split in ("train", "validation", "test"):
        assert evaluation[split] == metrics[split], split          # exactly, per class too
    assert evaluation["best_step"] == metrics["best_step"]
    assert not (tmp_path / "plots").exists()                       # no figure either


def test_evaluate_only_without_or_with_a_mismatched_checkpoint(folder_data, tiny, tmp_path, capsys):
    code, stderr = outcome(task2.main, [*task2_args(folder_data, tmp_path / "empty", tmp_path / "plots"),
                                    "--evaluate-only"], capsys)
    assert code == 1 and one_line_error(stderr) and "nothing to evaluate" in stderr and "best.pt" in stderr
    code, stderr = outcome(task2.main, [*task2_args(folder_data, tiny, tmp_path / "plots"), "--evaluate-only",
                                    "--lr", "0.3"], capsys)
    assert code == 2 and one_line_error(stderr) and "was made with --lr=0.05, not --lr=0.3" in stderr
    assert not (tiny / "evaluation.json").exists()
    # Without its config.json the run's settings are read back from best.pt: refused the same way, saying so.
    import shutil
    shutil.copytree(tiny, tmp_path / "run")
    (tmp_path / "run" / "config.json").unlink()
    code, stderr = outcome(task2.main, [*task2_args(folder_data, tmp_path / "run", tmp_path / "plots"),
                                        "--evaluate-only", "--lr", "0.3"], capsys)
    assert code == 2 and one_line_error(stderr) and "was made with --lr=0.05, not --lr=0.3" in stderr
    assert f"{tmp_path / 'run' / 'config.json'} does not exist" in stderr and "best.pt" in stderr
    assert not (tmp_path / "run" / "evaluation.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_writes_event_files(folder_data, tmp_path, capsys):
    code, _ = outcome(task2.main, [*task2_args(folder_data, tmp_path / "run", tmp_path / "plots"), "--max-steps", "5",
                               "--tensorboard"], capsys)
    assert code == 0
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = EventAccumulator(str(events[0].parent), size_guidance={"images": 0}).Reload()
    assert "run/validation_loss" in log.Tags()["scalars"] and "training curves" in log.Tags()["images"]
    assert [e.step for e in log.Scalars("run/validation_loss")] == [5]


def test_tensorboard_missing_is_one_line_saying_how_to_install_it(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code, stderr = outcome(task2.main, ["--tensorboard", "--run-dir", tmp_path / "run"], capsys)
    assert code == 2 and one_line_error(stderr) and "pip install tensorboard" in stderr
    assert not (tmp_path / "run").exists()
