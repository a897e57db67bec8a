"""report.py: every figure and plots/report.md from saved run directories, no training."""
import json
from pathlib import Path

import pytest

import report
import report_figures
import report_layers
import report_runs
import report_sections
import report_training
import run_folder
from helpers import fake_run, run_script
from utils import UserError, write_json


@pytest.fixture
def runs(tmp_path):
    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "task2", 0.6123, "Task 2")
    fake_run(runs_dir, "task3_model1", 0.7234, "Task 3 Model 1")
    fake_run(runs_dir, "task3_model2", 0.6862, "Task 3 Model 2")
    fake_run(runs_dir, "task3c_before", 0.6512, "Task 3c before", track_test=True)
    # task3d missing entirely; task4a interrupted (a checkpoint, no metrics.json)
    (runs_dir / "task4a").mkdir()
    (runs_dir / "task4a" / "last.pt").write_bytes(b"stand-in")
    return runs_dir


@pytest.mark.slow
def test_report_from_saved_runs(runs, tmp_path):
    plots = tmp_path / "plots"
    result = run_script("report.py", "--runs-dir", runs, "--plot-dir", plots, "--answers", tmp_path / "answers.md",
                        timeout=300)
    assert result.returncode == 0, result.stderr
    report = (plots / "report.md").read_text()
    # our numbers, each next to the published one
    assert "| Task 2 | finished | 0.612 | 0.739 | 0.888 | 0.858 |" in report         # summary: test, ours / theirs
    assert "| Task 3 Model 1 | finished | 0.723 | 0.810 | 0.777 | 0.596 |" in report
    assert "| Task 3 Model 2 | finished | 0.686 | 0.763 | 0.814 | 0.862 |" in report
    assert "| train | 0.888 | 0.712 | 0.257 | 0.915 |" in report                 # 2b: every split
    # data source and machine of every run
    assert report.count("image folders at cifar10-jpeg") >= 4 and "/data/" not in report
    assert "Test CPU, 2 threads" in report
    # missing run named with the command that makes it; unfinished one with --resume
    assert "task3d is missing: make it with `python task3d.py" in report
    assert "task3d is unfinished" not in report
    assert "python task4a.py" in report and "--resume" in report
    for figure in ("task2.png", "task3_model1.png", "task3_model2.png"):
        assert (plots / figure).stat().st_size > 10_000, figure
    assert not (plots / "task3c_before.png").exists()  # drawn only inside the 3c comparison


@pytest.mark.slow
def test_task3_comparisons_are_drawn(runs, tmp_path):
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    assert (plots / "task3_comparison.png").stat().st_size > 10_000
    assert (plots / "task3c_deepening.png").stat().st_size > 10_000
    assert "0.723" in (plots / "report.md").read_text()


@pytest.mark.slow
def test_truncated_history_is_a_clear_error_and_the_rest_is_drawn(runs, tmp_path):
    history = runs / "task3_model2" / "history.json"
    history.write_text(history.read_text()[:200])
    plots = tmp_path / "plots"
    with pytest.raises(UserError, match="1 run.s. could not be read"):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert "runs/task3_model2/history.json is truncated" in text
    assert (plots / "task2.png").exists() and (plots / "report.md").exists()
    assert not (plots / "task3_model2.png").exists()


@pytest.mark.slow
def test_empty_history_is_refused_not_drawn_empty(runs, tmp_path):
    write_json({"train_loss": {"steps": [], "values": []}, "validation": []},
               runs / "task2" / "history.json")
    plots = tmp_path / "plots"
    with pytest.raises(UserError):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    assert "history.json holds no training steps" in (plots / "report.md").read_text()
    assert not (plots / "task2.png").exists()


def test_missing_runs_dir_and_unwritable_plot_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        report.main(["--runs-dir", str(tmp_path / "nope"), "--plot-dir", str(tmp_path / "p")])
    # A path below a regular file cannot be created, even by root (chmod would not stop root).
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="cannot write"):
        report.main(["--runs-dir", str(tmp_path / "runs"), "--plot-dir", str(blocker / "plots")])


@pytest.mark.slow
def test_metrics_without_splits_is_a_clear_error(runs, tmp_path):
    (runs / "task2" / "metrics.json").write_text(json.dumps({"wall_seconds": 1}))
    with pytest.raises(UserError):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots")])
    assert "lacks train/validation/test" in (tmp_path / "plots" / "report.md").read_text()


@pytest.mark.slow
def test_task4_visualisations_only_from_cached_weights(runs, tmp_path, monkeypatch):
    from PIL import Image
    from torchvision.models import resnet18

    import resnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert "the ImageNet weights are not in" in text and "python task4b.py" in text
    assert not (plots / "task4b.png").exists()

    # A stand-in for the cached ImageNet file (random weights, same layout): now both are redrawn.
    import torch
    cache = resnet.weights_cache_dir()
    cache.mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), cache / resnet.WEIGHTS_FILE)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (300, 200), (120, 80, 40)).save(photo)
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots), "--image", str(photo)])
    assert (plots / "task4b.png").stat().st_size > 5_000
    assert (plots / "task4c.png").stat().st_size > 5_000
    assert "Redrawn" in (plots / "report.md").read_text()


@pytest.mark.slow
def test_run_in_progress_is_named(runs, tmp_path):
    (runs / "task4a" / "history.json").write_text("{")  # being written: must not be read
    lock = run_folder.lock(runs / "task4a")
    try:
        report.main(["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots")])
    finally:
        lock.close()
    assert "task4a is being trained right now" in (tmp_path / "plots" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("damage, expected", [
    (lambda m: m["test"].update(accuracy="0.9"), "test accuracy is '0.9', not a number"),
    (lambda m: m["validation"].update(loss=None), "validation loss is None, not a number"),
    (lambda m: m.update(train="0.9"), "it lacks train/validation/test"),
    (lambda m: m.update(wall_seconds="long"), "wall_seconds is 'long', not a number"),
])
def test_a_metrics_file_with_wrong_types_is_named_and_the_rest_is_produced(runs, tmp_path, damage, expected):
    path = runs / "task3_model2" / "metrics.json"
    metrics = json.loads(path.read_text())
    damage(metrics)
    path.write_text(json.dumps(metrics))
    plots = tmp_path / "plots"
    with pytest.raises(UserError, match="1 run.s. could not be read"):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert f"runs/task3_model2/metrics.json is damaged: {expected}" in text
    assert "| Task 2 | finished | 0.612 | 0.739 |" in text and (plots / "task2.png").exists()  # all else is there


@pytest.mark.slow
def test_a_config_with_wrong_types_is_named(runs, tmp_path):
    (runs / "task2" / "config.json").write_text(json.dumps({"name": "task2", "settings": "lr=0.05"}))
    plots = tmp_path / "plots"
    with pytest.raises(UserError, match="could not be read"):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    assert "runs/task2/config.json is damaged: 'settings' is not an object" in (plots / "report.md").read_text()


@pytest.mark.slow
def test_a_run_in_progress_is_drawn_and_marked(runs, tmp_path):
    (runs / "task3_model2" / "metrics.json").unlink()
    (runs / "task3_model2" / "last.pt").write_bytes(b"stand-in")
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert "task3_model2 is unfinished: continue it with `python task3_model2.py" in text
    assert (plots / "task3_model2.png").stat().st_size > 10_000      # drawn as far as it got


@pytest.mark.slow
def test_confusion_figure_and_most_confused_pairs(runs, tmp_path):
    import dataloaders

    path = runs / "task2" / "metrics.json"
    metrics = json.loads(path.read_text())
    confusion = [[90 if i == j else 1 for j in range(10)] for i in range(10)]
    confusion[3][5] = 40                                  # cats taken for dogs
    metrics["test"].update(confusion=confusion,
                           per_class_accuracy={c: confusion[i][i] / sum(confusion[i])
                                               for i, c in enumerate(dataloaders.CLASSES)})
    path.write_text(json.dumps(metrics))
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    assert (plots / "task2_confusion.png").stat().st_size > 10_000
    assert "Most confused: Task 2: cat taken for dog (40 images)" in (plots / "report.md").read_text()


@pytest.mark.slow
def test_runs_that_differ_only_by_seed_are_summarised(runs, tmp_path):
    for seed, accuracy in ((0, 0.60), (1, 0.62), (2, 0.64)):
        fake_run(runs, "task2", accuracy, "Task 2", seed=seed, directory=f"task2-seed{seed}")
    fake_run(runs, "task2", 0.5, "Task 2", seed=3, directory="task2-other")
    json_path = runs / "task2-other" / "config.json"
    config = json.loads(json_path.read_text())
    config["settings"]["lr"] = 0.01                       # another experiment: not in the group
    json_path.write_text(json.dumps(config))
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    # runs/task2 (seed 0) and task2-seed0 are the same seed: counted once
    assert "| Task 2 | 3 | 0, 1, 2 | " in text and "| 0.6200 ± 0.0200 |" in text
    assert "| Task 2 | 4 |" not in text


# ---------------------------------------------------------------- the report as a TA reads it (issue 21)

def figure_links(markdown: str) -> list[str]:
    import re
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


@pytest.mark.slow
def test_report_is_portable_self_contained_and_follows_the_assignment(runs, tmp_path):
    import re
    import shutil

    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    markdown, page = (plots / "report.md").read_text(), (plots / "report.html").read_text()
    for text in (markdown, page):
        assert str(tmp_path) not in text and str(run_folder.ROOT) not in text and "/tmp/" not in text
    for path in plots.iterdir():     # no file there (tables, figures' metadata) names a folder of this machine
        assert str(tmp_path).encode() not in path.read_bytes() and b"/data/" not in path.read_bytes(), path.name
    headings = [line.removeprefix("### ").split(":")[0] for line in markdown.splitlines() if line.startswith("### ")]
    assert headings[:16] == [f"Task {q}" for q in ("1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "3a", "3b",
                                                     "3c", "3d", "4a", "4b", "4c")]    # the assignment's order
    assert "published student report" in markdown
    # The missing Task 3d run: the command that makes it and how long it takes on a CPU and a GPU.
    assert "python task3d.py" in markdown and "on a 2-core CPU" in markdown and "H100" in markdown
    links = figure_links(markdown)
    assert {"task2.png", "task3_comparison.png", "task3c_deepening.png"} <= set(links)
    moved = tmp_path / "elsewhere" / "zipped"
    shutil.copytree(plots, moved)
    shutil.rmtree(plots)
    assert all((moved / link).is_file() for link in links)           # relative links resolve after a move
    # One file: every figure inlined, nothing fetched, no script.
    assert page.count('<img src="data:image/png;base64,') == len(links)
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "<script" not in page and "@media print" in page
    for png in moved.glob("*.png"):
        pdf = png.with_suffix(".pdf").read_bytes()
        width = float(re.search(rb"/MediaBox \[\s*0 0 ([\d.]+)", pdf).group(1))
        assert width <= 7 * 72, png.name                              # at most 7 in wide, as vector too


@pytest.mark.slow
def test_runs_that_are_not_the_real_thing_say_so_in_rows(runs, tmp_path):
    config_path = runs / "task3_model2" / "config.json"
    config = json.loads(config_path.read_text())
    config["settings"].update(subset=300, max_steps=5, epochs=2)
    config["defaults"] = {"epochs": 10, "subset": None, "max_steps": None}
    config_path.write_text(json.dumps(config))
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert "| Task 3 Model 2 | smoke run |" in text                   # the summary's state
    assert "Task 3 Model 2 (smoke run: --subset 300, --max-steps 5; 2 of the recipe's 10 epochs)" in text  # banner
    assert "| Model 2 (ours) (smoke run) |" in text                   # 3b's column
    assert "| Task 2 | finished" in text                              # the real runs carry no mark


def test_caveats_name_every_kind_of_not_real_run():
    config = {"settings": {"weights": "none", "image_size": 64, "validation_fraction": 0.5, "epochs": 5},
              "defaults": {"image_size": 224, "validation_fraction": 0.1, "epochs": 5},
              "data": {"train_images": 100, "validation_images": 100, "test_images": 100}}
    notes = run_folder.caveats(config, "unfinished")
    assert notes == ["random weights (--weights none)", "image size 64 (recipe: 224)",
                     "validation fraction 0.5 (recipe: 0.1)", "not CIFAR-10's usual split (100 / 100 / 100 images)",
                     "stopped before its end (interrupted)"]
    full = {"settings": {"epochs": 10}, "defaults": {"epochs": 10},
            "data": {"train_images": 45000, "validation_images": 5000, "test_images": 10000}}
    assert run_folder.caveats(full) == []


@pytest.mark.slow
def test_a_smoke_run_elsewhere_never_replaces_the_real_figure(folder_data, tmp_path):
    real = run_folder.PLOT_DIR / "task2.png"
    before = real.read_bytes() if real.exists() else None
    run_dir = tmp_path / "task2-smoke"
    result = run_script("task2.py", "--data-dir", folder_data, "--subset", 200, "--max-steps", 6, "--batch-size", 16,
                        "--validations-per-epoch", 3, "--device", "cpu", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert (real.read_bytes() if real.exists() else None) == before
    assert (run_dir / "curves.png").stat().st_size > 10_000 and (run_dir / "curves.pdf").exists()
    assert f"figure: {run_dir / 'curves.png'}" in result.stdout
    assert "Task 2 (smoke run: --subset 200, --max-steps 6; not the real result)" in result.stdout
    # Training accuracy: the running accuracy of each validation interval, from the batches trained.
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["train_accuracy"]["values"]) == len(history["train_loss"]["values"]) == 6
    points = history["validation"]
    assert all(0 <= p["train_accuracy"] <= 1 for p in points)
    assert points[0]["train_accuracy"] == pytest.approx(
        sum(history["train_accuracy"]["values"][:points[0]["step"]]) / points[0]["step"])
    assert json.loads((run_dir / "config.json").read_text())["defaults"]["epochs"] == 10


def test_figure_goes_to_plots_only_for_the_tasks_own_folder(tmp_path):
    assert run_folder.figure_path(run_folder.RUNS_DIR / "task2", "task2") == run_folder.PLOT_DIR / "task2.png"
    assert run_folder.figure_path(tmp_path / "x", "task2") == tmp_path / "x" / "curves.png"
    assert run_folder.figure_path(run_folder.RUNS_DIR / "task2-seed1", "task2") == \
        run_folder.RUNS_DIR / "task2-seed1" / "curves.png"
    assert run_folder.figure_path(tmp_path / "x", "task2", tmp_path / "p") == tmp_path / "p" / "task2.png"


# ---------------------------------------------------------------- --train-missing

@pytest.fixture
def training(runs, monkeypatch):
    """--train-missing with the scripts faked: each call is recorded and makes the run it names (a real one, or
    the exit code `codes` gives); the ImageNet weights are "downloaded" unless a test says otherwise."""
    import resnet
    calls, codes = [], {}

    def fake_training(argv):
        calls.append(argv)
        name = Path(argv[argv.index("--run-dir") + 1]).name
        if codes.get(name):
            return codes[name]
        fake_run(runs, name, 0.8)
        return 0
    monkeypatch.setattr(report_training, "train_one", fake_training)
    monkeypatch.setattr(resnet, "imagenet_state_dict", lambda: {})
    monkeypatch.setattr(report_training, "machine_kinds", lambda: (["cpu-bf16"], "this CPU in bf16 (AVX512-BF16)"))
    return calls, codes


@pytest.mark.slow
def test_train_missing_trains_in_order_then_writes_the_report(runs, tmp_path, training, capsys):
    calls, _ = training
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots), "--train-missing", "--data-dir", "DATA"])
    assert calls == [["task3d.py", "--run-dir", str(runs / "task3d"), "--data-dir", "DATA"],
                     ["task4a.py", "--run-dir", str(runs / "task4a"), "--resume", "--data-dir", "DATA"]]
    err = capsys.readouterr().err
    assert "will train 2 run(s)" in err and "machines like this CPU in bf16 (AVX512-BF16)" in err
    assert "~14 min estimated on a 2-core CPU with AVX512-BF16 (bf16)" in err    # Task 3d without AMX
    assert "Not run yet" not in (plots / "report.md").read_text()


@pytest.mark.slow
def test_a_run_that_is_not_the_real_thing_is_replaced_as_overwrite_does(runs, tmp_path, training, capsys):
    calls, _ = training
    config = json.loads((runs / "task2" / "config.json").read_text())
    config["settings"].update(subset=2000, max_steps=50)
    write_json(config, runs / "task2" / "config.json")
    report.main(["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots"), "--train-missing"])
    assert calls[0] == ["task2.py", "--run-dir", str(runs / "task2"), "--overwrite"]
    err = capsys.readouterr().err
    assert "replace  Task 2 (finished, not the real thing: smoke run: --subset 2000, --max-steps 50)" in err


@pytest.mark.slow
def test_nothing_to_train_only_when_every_run_is_real(runs, tmp_path, training, capsys):
    calls, _ = training
    fake_run(runs, "task3d", 0.9)
    fake_run(runs, "task4a", 0.8)
    report.main(["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots"), "--train-missing"])
    assert calls == [] and "nothing to train" in capsys.readouterr().err


@pytest.mark.slow
def test_what_cannot_run_is_skipped_up_front_a_failure_never_stops_the_report(runs, tmp_path, training, capsys,
                                                                               monkeypatch):
    import resnet
    calls, codes = training

    def offline():
        raise UserError("ImageNet weights for ResNet-18 are not cached and could not be downloaded")
    monkeypatch.setattr(resnet, "imagenet_state_dict", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    codes["task3d"] = 1
    plots = tmp_path / "plots"
    with pytest.raises(UserError, match=r"1 run\(s\) failed to train \(Task 3d"):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots), "--train-missing", "--image",
                     str(tmp_path / "no-photo.jpg")])
    err = capsys.readouterr().err
    skipped = err.index("skipped Task 4a: ImageNet weights for ResNet-18 are not cached")
    assert skipped < err.index("will train 1 run(s)")               # said before any training
    assert "skipped Tasks 4b and 4c (figures): " in err and "no-photo.jpg is missing" in err
    assert [argv[0] for argv in calls] == ["task3d.py"]
    assert "training Task 3d failed (exit 1" in err
    assert (plots / "report.md").is_file() and (plots / "report.html").is_file()    # written all the same


@pytest.mark.slow
def test_skip_leaves_a_run_out_and_says_so(runs, tmp_path, training, capsys):
    calls, _ = training
    report.main(["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots"), "--train-missing", "--skip",
                 "task3d", "task4a"])
    err = capsys.readouterr().err
    assert calls == [] and "skipped Task 3d (--skip)" in err and "skipped Task 4a (--skip)" in err


def test_an_interrupted_train_missing_says_how_to_go_on_with_every_flag_given(runs, tmp_path, training, monkeypatch):
    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(report_training, "train_one", interrupted)
    argv = ["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots"), "--train-missing", "--data-dir", "D D"]
    with pytest.raises(report.TrainingInterrupted) as stopped:
        report.main(argv)
    assert f"`python report.py --runs-dir {runs} --plot-dir {tmp_path / 'plots'} --train-missing --data-dir 'D D'` " \
           "continues where it stopped" in str(stopped.value)
    assert "--resume" not in str(stopped.value)


@pytest.mark.slow
def test_the_experiments_train_only_when_asked(runs, tmp_path, training):
    calls, _ = training
    fake_run(runs, "task3d", 0.9)
    fake_run(runs, "task4a", 0.8)
    report.main(["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots"), "--train-missing",
                 "--with-experiments"])
    assert [Path(argv[argv.index("--run-dir") + 1]).name for argv in calls] == [
        "task3c_elu", "task3c_adam", "task3c_rmsprop", "task3c_l2", "task3c_wider"]
    assert calls[1][:5] == ["task3_model1.py", "--optimizer", "adam", "--lr", "1e-3"]


# ---------------------------------------------------------------- damaged or odd inputs (issue 20)

def with_classes(metrics: dict) -> dict:
    import dataloaders
    confusion = [[9 if i == j else 0 for j in range(10)] for i in range(10)]
    metrics["test"].update(confusion=confusion, per_class_accuracy={c: 1.0 for c in dataloaders.CLASSES})
    return metrics


@pytest.mark.parametrize("damage, expected", [
    (lambda m: with_classes(m)["test"].pop("per_class_accuracy"), "test per_class_accuracy is not 10 class names"),
    (lambda m: with_classes(m)["test"].update(per_class_accuracy=0.5), "test per_class_accuracy is not 10 class"),
    (lambda m: with_classes(m)["test"].update(confusion=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
     "the test confusion matrix is not a 10x10 table of counts"),
    (lambda m: m["test"].update(accuracy=float("nan")), "test accuracy is nan, out of its range"),
    (lambda m: m["train"].update(loss=float("inf")), "train loss is inf, out of its range"),
    (lambda m: m["validation"].update(accuracy=-5), "validation accuracy is -5, out of its range"),
    (lambda m: m["test"].update(accuracy=1.5), "test accuracy is 1.5, out of its range"),
    (lambda m: m.update(early_stopped="yes"), "early_stopped is not true or false"),
])
def test_metrics_out_of_range_or_with_bad_class_tables_are_damaged(runs, damage, expected):
    path = runs / "task2" / "metrics.json"
    metrics = json.loads(path.read_text())
    damage(metrics)
    path.write_text(json.dumps(metrics))           # NaN and Infinity as json writes them
    with pytest.raises(UserError, match=f"metrics.json is damaged: {expected}"):
        run_folder.read_run(runs / "task2")


@pytest.mark.slow
def test_a_confusion_matrix_of_three_classes_is_named_and_the_rest_is_produced(runs, tmp_path):
    path = runs / "task2" / "metrics.json"
    metrics = with_classes(json.loads(path.read_text()))
    metrics["test"]["confusion"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    path.write_text(json.dumps(metrics))
    plots = tmp_path / "plots"
    with pytest.raises(UserError, match="1 run.s. could not be read"):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert "runs/task2/metrics.json is damaged: the test confusion matrix is not a 10x10" in text
    assert "| Task 3 Model 1 | finished | 0.723 | 0.810 |" in text and (plots / "report.html").exists()


@pytest.mark.slow
def test_a_lock_that_cannot_be_opened_counts_as_not_training(runs, tmp_path):
    (runs / "task4a" / ".lock").mkdir()            # opening it fails, as on a read-only mount or another user's
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    assert "task4a is unfinished" in (plots / "report.md").read_text()


def test_runs_dir_that_is_a_file_is_named(tmp_path):
    blocker = tmp_path / "runs.txt"
    blocker.write_text("")
    with pytest.raises(UserError, match="is a file; it must be the folder that holds one run folder per script"):
        report.main(["--runs-dir", str(blocker), "--plot-dir", str(tmp_path / "plots")])


def test_layer_table_from_the_model_repr_in_config():
    from torch import nn

    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU()), nn.Flatten(), nn.Linear(8, 10))
    assert report_layers.layer_rows(repr(model)) == [
        ["0.0", "Conv2d", "3, 8, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2)"], ["0.1", "ReLU", ""],
        ["1", "Flatten", "start_dim=1, end_dim=-1"], ["2", "Linear", "in_features=8, out_features=10, bias=True"]]


@pytest.mark.slow
def test_a_task4b_figure_of_random_weights_is_marked_in_the_report(runs, tmp_path, monkeypatch):
    from PIL import Image

    import task4b

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))      # no cached ImageNet weights
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (300, 200), (120, 80, 40)).save(photo)
    plots = tmp_path / "plots"
    task4b.main(["--weights", "none", "--image", str(photo), "--plot-dir", str(plots)])
    assert (plots / "task4b.pdf").exists()
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    section = text[text.index("### Task 4b"):text.index("### Task 4c")]
    assert "**Not the real thing**: drawn with random weights" in section
    assert "![Figure 7: the first convolution's filters [14, 26, 32, 49, 52]" in section
    assert "(First-layer filters and activations on photo.jpg (random weights))](task4b.png)" in section


@pytest.mark.slow
def test_a_config_whose_defaults_or_model_is_not_an_object_is_named(runs, tmp_path):
    for name, section in (("task2", "defaults"), ("task3_model2", "model")):
        config = json.loads((runs / name / "config.json").read_text())
        config[section] = None
        write_json(config, runs / name / "config.json")
    plots = tmp_path / "plots"
    with pytest.raises(UserError, match="could not be read"):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert "runs/task2/config.json is damaged: 'defaults' is not an object" in text
    assert "runs/task3_model2/config.json is damaged: 'model' is not an object" in text
    assert "| Task 3 Model 1 | finished | 0.723 | 0.810 |" in text  # Model 1, undamaged, is reported


@pytest.mark.slow
def test_a_run_set_aside_by_an_interrupted_overwrite_is_reported(runs, tmp_path):
    """--overwrite killed before its first checkpoint: the finished run waits in .previous-run/ until the
    next start of its script puts it back; the report reads it there, not "missing"."""
    run_folder.set_aside(runs / "task2")
    write_json({"name": "task2", "settings": {"lr": 0.01}}, runs / "task2" / "config.json")  # the new run's
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert "| Task 2 | finished | 0.612 | 0.739 |" in text and "task2 is missing" not in text


def test_a_run_that_did_not_record_its_defaults_is_not_called_the_defaults():
    settings = {"lr": 0.01, "optimizer": "adam", "seed": 0}
    assert report_sections.differences({"config": {"settings": settings}}) == \
        "settings as in its config.json (defaults not recorded)"
    defaults = {"lr": 0.05, "optimizer": "adam"}
    assert report_sections.differences({"config": {"settings": settings, "defaults": defaults}}) == "--lr 0.01"


def test_the_curves_mark_the_best_checkpoint_and_the_early_stop_wherever_they_are_drawn(tmp_path, monkeypatch):
    """One rule (figures.run_marks) for the task's own figure, the report's and Task 3's comparison."""
    import figures
    import task3_compare
    history = {"train_loss": {"steps": [0], "values": [2.3]},
               "validation": [{"step": 10, "loss": 1.2}, {"step": 20, "loss": 0.9}, {"step": 30, "loss": 1.0}]}
    stopped = {"best_step": 20, "steps": 30, "early_stopped": True}
    assert figures.run_marks(stopped, history) == {"best": 20, "stopped": 30}
    assert figures.run_marks({**stopped, "early_stopped": False}, history) == {"best": 20}
    assert figures.run_marks(None, history) == {"best": 20}  # unfinished: the lowest validation loss so far
    assert figures.run_marks(None, {**history, "validation": []}) == {}
    drawn = []
    monkeypatch.setattr(figures, "training_curves", lambda runs, path, **kw: drawn.append(kw["marks"]) or path)
    runs_dir = tmp_path / "runs"
    for name in ("task3_model1", "task3_model2", "task3c_before"):
        fake_run(runs_dir, name, 0.7)
        write_json({**json.loads((runs_dir / name / "metrics.json").read_text()), "early_stopped": True},
                   runs_dir / name / "metrics.json")
    task3_compare.task3_outputs(runs_dir, tmp_path / "plots")
    item = {"run": run_folder.read_run(runs_dir / "task3_model1"), "state": "finished"}
    report_figures.draw(report_runs.BY_NAME["task3_model1"], item, tmp_path / "plots", {"curves": {}, "confusion": {}})
    assert drawn and all(mark == {"best": 40, "stopped": 40} for marks in drawn for mark in marks.values())
    assert sum(len(marks) for marks in drawn) == 5


@pytest.mark.parametrize("moved", [1, 3], ids=["config moved", "config-history-metrics moved"])
def test_a_run_caught_mid_move_by_a_killed_overwrite_is_reported(tmp_path, moved):
    """--overwrite killed while moving the finished run aside (.previous-run.partial/, some files still in
    place): the report reads the run the next start puts back, as run_folder.status counts it, not "missing"."""
    import os

    import task3_compare
    folder = fake_run(tmp_path, "task2", 0.6123, "Task 2")
    (folder / run_folder.MOVING).mkdir()
    for name in [name for name in run_folder.OUTPUTS if (folder / name).exists()][:moved]:  # set_aside's order
        os.replace(folder / name, folder / run_folder.MOVING / name)
    state, run, message = report_runs.load(report_runs.BY_NAME["task2"], tmp_path)
    assert run_folder.status(folder) == "finished" and state == "finished", message
    assert run["metrics"]["test"]["accuracy"] == 0.6123 and run_folder.MOVING in message
    found, missing = task3_compare.load_runs(tmp_path, ["task2"], {})  # Task 3's figures agree
    assert not missing and found["task2"]["metrics"] == run["metrics"]


def test_a_run_records_its_own_scripts_defaults_whatever_was_parsed_since(tmp_path):
    """cli.parse hands the script's defaults over with its settings (no module-level record that the next
    parse overwrites): config.json's "defaults" are those of the script that made the run."""
    import cli
    import runs
    import task4a
    args = cli.parse(cli.training_parser("", "task2"), ["--run-dir", str(tmp_path / "task2"), "--device", "cpu",
                                                          "--data-dir", str(tmp_path / "no-data")])
    cli.parse(cli.training_parser("", "task4a", **task4a.RECIPE), ["--device", "cpu"])  # another script, later
    run = runs.Run.start(args, title="Task 2")
    try:
        record = run.config_record()
    finally:
        run.release()
    assert record["defaults"]["epochs"] == 10 and record["defaults"]["lr"] == 0.05
    assert "script_defaults" not in record["settings"] and record["settings"]["epochs"] == 10


# ---------------------------------------------------------------- the student's own words

STUDENT = """# Assignment 3: CIFAR-10

Ada Student and Bo Partner

## Task 1b: pooling

Max pooling keeps the *largest* value of each window:

- a shift inside a window changes **nothing**;
- a shift across windows changes one output, as $y_{ij} = \\max_{(m,n) \\in W_{ij}} x_{mn}$ says.

| shift | outputs changed |
|---|---|
| 1 pixel | 0 of 16 |

```
## Task 2a  <- inside a code block: not a heading
```

## Task 3d

Our recipe, in our words.

## Conclusion

We learnt that depth helps.
"""


@pytest.mark.slow
def test_the_answers_file_is_written_once_and_survives_every_regeneration(runs, tmp_path):
    answers, plots = tmp_path / "answers.md", tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots), "--answers", str(answers)])
    template = answers.read_text()
    assert template.startswith("# ") and template.count("\n## Task ") == 16
    assert "### Task 1b" in (plots / "report.md").read_text()        # an empty answer shows nothing
    answers.write_text(STUDENT)
    for _ in range(2):
        report.main(["--runs-dir", str(runs), "--plot-dir", str(plots), "--answers", str(answers)])
    assert answers.read_text() == STUDENT                              # never changed
    markdown, page = (plots / "report.md").read_text(), (plots / "report.html").read_text()
    assert markdown.startswith("# Assignment 3: CIFAR-10\n\nAda Student and Bo Partner")
    section = markdown[markdown.index("### Task 1b"):markdown.index("### Task 1c")]
    assert "Max pooling keeps the *largest* value" in section and "| 1 pixel | 0 of 16 |" in section
    assert "$y_{ij} = \\max_{(m,n) \\in W_{ij}} x_{mn}$" in section
    assert "Our recipe, in our words." in markdown[markdown.index("### Task 3d"):markdown.index("### Task 4a")]
    assert "#### Task 2a  <- inside" not in markdown and "## Task 2a  <- inside a code block" in markdown
    notes = markdown[markdown.index("## Further notes"):]
    assert "### Conclusion" in notes and "We learnt that depth helps." in notes
    # Rendered by the Markdown library: emphasis, a list, a table, the math as text, the code block as code.
    assert "<title>Assignment 3: CIFAR-10</title>" in page
    html_section = page[page.index('id="task1b"'):page.index('id="task1c"')]
    for fragment in ("<em>largest</em>", "<strong>nothing</strong>", "<li>a shift inside a window",
                     "<td>1 pixel</td>", r'<span class="math inline">y_{ij} = \max_{(m,n) \in W_{ij}} x_{mn}</span>'):
        assert fragment in html_section, fragment
    assert "<pre><code>## Task 2a  &lt;- inside a code block" in page


def test_answers_that_cannot_be_a_file_are_refused_before_any_work(runs, tmp_path, capsys):
    from helpers import exit_code
    code = exit_code(report.main, "--runs-dir", runs, "--plot-dir", tmp_path / "plots", "--answers", tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a folder, not a Markdown file" in err
    assert not (tmp_path / "plots").exists()


@pytest.mark.slow
def test_report_prints_a_short_summary_not_the_markdown(runs, tmp_path, capsys):
    config = json.loads((runs / "task2" / "config.json").read_text())
    config["settings"].update(subset=300, max_steps=5)
    write_json(config, runs / "task2" / "config.json")
    report.main(["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots")])
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) < 20 and "| --- |" not in err
    assert f"wrote {tmp_path / 'plots' / 'report.md'} and {tmp_path / 'plots' / 'report.html'}" in err
    assert "not the real thing: Task 2 (smoke run: --subset 300, --max-steps 5)" in err
    assert f"task3d is missing: make it with `python task3d.py --run-dir {runs / 'task3d'}`" in err
    assert "task4a is unfinished: continue it with" in err


@pytest.mark.slow
def test_every_number_of_a_smoke_run_says_so_where_it_is_shown(runs, tmp_path):
    for name in ("task2", "task3_model1", "task3_model2", "task3c_before"):
        config = json.loads((runs / name / "config.json").read_text())
        config["settings"].update(subset=300, max_steps=5)
        write_json(config, runs / name / "config.json")
    plots = tmp_path / "plots"
    report.main(["--runs-dir", str(runs), "--plot-dir", str(plots)])
    text = (plots / "report.md").read_text()
    assert text.index("**Not the final report.**") < text.index("## Task 1")     # a banner at the top
    assert "| Task 2 | smoke run |" in text and "| Task 3c before deepening | smoke run |" in text
    section = text[text.index("### Task 2b"):text.index("### Task 3a")]
    assert "| split | loss (ours) (smoke run) | accuracy (ours) (smoke run) |" in section
    section = text[text.index("### Task 3b"):text.index("### Task 3c")]
    assert "Model 1 (ours) (smoke run)" in section and "(**not the real result**: Model 1: smoke run" in section
    assert "Figure 3: Model 1 and Model 2, loss and accuracy (Model 1: smoke run" in section
    section = text[text.index("### Task 3c"):text.index("### Task 3d")]
    assert "before deepening: one conv per stage (smoke run)" in section
    assert "**not the real result**: before deepening: smoke run" in section and "| Model 1 (smoke run) |" in section
    table = (plots / "task3_table.md").read_text()
    assert "**Not the real result**: Model 1: smoke run: --subset 300, --max-steps 5" in table


# ---------------------------------------------------------------- Ctrl-C (issue 32, item 13)

def test_ctrl_c_while_the_report_is_drawn_says_what_it_left(runs, tmp_path, monkeypatch, capsys):
    from helpers import exit_code

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(report, "draw_all", interrupted)
    argv = ["--runs-dir", str(runs), "--plot-dir", str(tmp_path / "plots")]
    assert exit_code(report.main, *argv) == 130
    err = capsys.readouterr().err
    assert "interrupted while writing the report: no run was changed" in err and "nothing was trained" not in err
    assert f"`python report.py {' '.join(argv)}` again" in err


@pytest.mark.slow
def test_ctrl_c_as_a_command_exits_is_one_line_not_a_traceback():
    import subprocess
    import sys

    from helpers import ROOT
    code = ("import os, signal, time, threading\nimport cli\n"
            "worker = threading.Thread(target=time.sleep, args=(5,))\nworker.start()\n"
            "cli.main(lambda argv: print('done'))\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert "interrupted as it exited: what it reported above is done" in result.stderr
