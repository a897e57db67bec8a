"""The shared Trainer: early stopping, best checkpoint, atomic writes, resume."""
import errno
import os

import pytest
import torch
from torch import nn

import dataloaders
import figures
import utils
from task3d import Lookahead
from checkpoint import RunState, should_early_stop
from settings import TrainConfig
from trainer import Trainer, final_evaluation
from utils import UserError


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 10))


def make_trainer(data, run_dir, model=None, lookahead_every=0, **overrides):
    loaders = dataloaders.load_cifar10(16, data_dir=data, download=False)
    config = TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 0.05, "early_stop_count": 4, **overrides})
    run_dir.mkdir(parents=True, exist_ok=True)
    model = model or tiny_model()
    callbacks = [Lookahead(model, lookahead_every, 0.95)] if lookahead_every else []
    return Trainer(model, *loaders, config, run_dir, "cpu", callbacks=callbacks,
                   settings={"lookahead_every": lookahead_every})


@pytest.mark.parametrize("losses, patience, expected", [
    ([1.0, 0.9, 0.8], 4, False),                     # too few validations
    ([1.0, 0.9, 0.95, 0.96, 0.97], 4, False),        # best is 3 validations old
    ([1.0, 0.9, 0.95, 0.96, 0.97, 0.98], 4, True),   # best is 4 validations old
    ([1.0, 0.9, 0.95, 0.96, 0.97, 0.85], 4, False),  # just improved
    ([0.5, 0.6], 1, True),
])
def test_should_early_stop(losses, patience, expected):
    assert should_early_stop(losses, patience) is expected


def scripted_validation(monkeypatch, losses):
    """Make Trainer.evaluate return the given validation losses in order."""
    queue = list(losses)

    def evaluate(self, loader):
        if loader is self.val_loader and queue:
            return {"loss": queue.pop(0), "accuracy": 0.5}
        return {"loss": 1.0, "accuracy": 0.5}
    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def test_early_stopping_and_best_checkpoint(folder_data, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [1.0, 0.8, 0.9, 0.85, 0.95, 0.99, 0.1, 0.1])
    trainer = make_trainer(folder_data, tmp_path, epochs=10, early_stop_count=4)
    trainer.train()
    validations = trainer.state.history["validation"]
    assert trainer.state.early_stopped and len(validations) == 6
    best = utils.load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == validations[1]["step"] == trainer.state.best["step"]
    last = utils.load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == validations[-1]["step"]
    # Validation happens twice per epoch: after the middle batch and the last one.
    steps_per_epoch = len(trainer.train_loader)
    assert [v["step"] for v in validations[:2]] == [round(steps_per_epoch / 2), steps_per_epoch]

    final_evaluation(trainer)
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, best["model"][name]), f"{name} not reloaded from best.pt"
    assert any(not torch.equal(t, last["model"][n]) for n, t in trainer.model.state_dict().items())


def test_final_evaluation_covers_every_image(folder_data, tmp_path):
    trainer = make_trainer(folder_data, tmp_path, max_steps=3)
    trainer.train()
    metrics = final_evaluation(trainer)
    # Recompute by hand over every image of each split with the best weights (the validation
    # numbers are those of the last validation, taken with these weights, not a second pass).
    assert trainer.state.best["step"] == trainer.step == 3
    for split, loader in (("train", trainer.train_loader), ("validation", trainer.val_loader),
                          ("test", trainer.test_loader)):
        with torch.no_grad():
            logits = trainer.model.eval()(loader.transform(loader.images))
        loss = nn.functional.cross_entropy(logits, loader.labels).item()
        accuracy = (logits.argmax(1) == loader.labels).float().mean().item()
        assert metrics[split]["loss"] == pytest.approx(loss, rel=1e-5)
        assert metrics[split]["accuracy"] == pytest.approx(accuracy)
    assert set(utils.read_json(tmp_path / "metrics.json")) >= {"train", "validation", "test", "steps"}


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    # what torch.save raises when the disk fills up under it
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1200"),
])
def test_atomic_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "best.pt"
    utils.save_checkpoint({"value": 1}, path)

    def failing_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise failure
    monkeypatch.setattr(torch, "save", failing_save)
    if isinstance(failure, RuntimeError):  # the disk is the likely cause when it is (nearly) full
        monkeypatch.setattr(os, "statvfs", lambda folder: type("Full", (), {"f_bavail": 0, "f_files": 1000,
                                                                            "f_favail": 900})())
    with pytest.raises(utils.UserError, match=r"could not write .*best.pt: the disk is full; the previous "
                                              r"best.pt is intact"):
        utils.save_checkpoint({"value": 2}, path)
    monkeypatch.undo()
    assert utils.load_checkpoint(path)["value"] == 1
    assert os.listdir(tmp_path) == ["best.pt"]  # no temporary file left behind


def test_a_failed_figure_write_keeps_the_old_png(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "figure.png"
    figures.save(plt.figure(), path)
    before = path.read_bytes(), path.with_suffix(".pdf").read_bytes()
    figure = plt.figure()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    figure.savefig = disk_full
    with pytest.raises(utils.UserError, match="figure.png: the disk is full; the previous figure.png and figure.pdf "
                                              "are intact"):
        figures.save(figure, path)
    assert (path.read_bytes(), path.with_suffix(".pdf").read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["figure.pdf", "figure.png"]
    assert not plt.fignum_exists(figure.number)          # closed either way


def final_weights(trainer):
    return {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}


@pytest.mark.parametrize("lookahead_every", [0, 3])
def test_resume_after_interrupt_matches_an_uninterrupted_run(folder_data, tmp_path, monkeypatch, lookahead_every):
    # Interrupted at step 11, between two averaging steps: the average must come back from last.pt.
    reference = make_trainer(folder_data, tmp_path / "straight", lookahead_every=lookahead_every)
    reference.train()

    interrupted = make_trainer(folder_data, tmp_path / "resumed", lookahead_every=lookahead_every)
    original_step, calls = Trainer.train_step, []

    def step_then_interrupt(self, images, labels):
        if len(calls) == 11:  # in the middle of the first epoch, after a validation
            raise KeyboardInterrupt
        calls.append(1)
        return original_step(self, images, labels)
    monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    monkeypatch.undo()
    assert utils.load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 11

    resumed = make_trainer(folder_data, tmp_path / "resumed", lookahead_every=lookahead_every)
    resumed.resume()
    assert resumed.step == 11
    resumed.train()
    assert resumed.step == reference.step
    for name, tensor in final_weights(reference).items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert resumed.state.history == reference.state.history


class At:
    """The two numbers of a Trainer that a callback reads."""

    def __init__(self, step, total_steps):
        self.step, self.total_steps = step, total_steps


def test_lookahead_averages_every_n_steps_and_ends_on_the_average():
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    lookahead = Lookahead(model, every=2, decay=0.5)
    lookahead.on_train_start(At(0, 10))                   # the average starts from the weights as they are
    assert lookahead.decay_at(0, 10) == 0 and lookahead.decay_at(10, 10) == pytest.approx(0.25)
    assert lookahead.decay_at(5, 10) == pytest.approx(0.25 / 8)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead.after_step(At(1, 10))                       # not an averaging step: nothing changes
    assert torch.equal(model.weight, torch.ones(1, 2)) and torch.equal(lookahead.average["weight"], torch.zeros(1, 2))
    lookahead.after_step(At(2, 10))                       # decay 0.25 * 0.2**3: almost all new weights
    expected = 1 - 0.25 * 0.2 ** 3
    assert torch.allclose(lookahead.average["weight"], torch.full((1, 2), expected))
    assert torch.equal(model.weight, lookahead.average["weight"])   # training continues from the average
    with torch.no_grad():
        model.weight.fill_(3.0)
    lookahead.after_step(At(7, 7))                        # the last step averages even off the grid
    assert torch.allclose(model.weight, torch.full((1, 2), 0.25 * expected + 0.75 * 3))


def test_lookahead_is_part_of_the_resume_signature(folder_data, tmp_path):
    make_trainer(folder_data, tmp_path, max_steps=2).train()
    with pytest.raises(utils.UserError, match="lookahead_every"):
        make_trainer(folder_data, tmp_path, max_steps=2, lookahead_every=5).resume()


def test_resume_can_extend_the_epoch_budget(folder_data, tmp_path):
    reference = make_trainer(folder_data, tmp_path / "two", epochs=2)
    reference.train()
    short = make_trainer(folder_data, tmp_path / "one", epochs=1)
    short.train()
    extended = make_trainer(folder_data, tmp_path / "one", epochs=2)
    extended.resume()
    extended.train()
    for name, tensor in final_weights(reference).items():
        assert torch.equal(tensor, extended.model.state_dict()[name]), name


def test_resuming_an_early_stopped_run_trains_no_further(folder_data, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [1.0, 0.8, 0.9, 0.85, 0.95, 0.99])
    stopped = make_trainer(folder_data, tmp_path, epochs=10, early_stop_count=4)
    stopped.train()
    assert stopped.state.early_stopped
    resumed = make_trainer(folder_data, tmp_path, epochs=10, early_stop_count=4)
    resumed.resume()
    resumed.train()
    assert resumed.state.early_stopped and resumed.step == stopped.step
    # A larger patience on --resume lets the run continue.
    patient = make_trainer(folder_data, tmp_path, epochs=10, early_stop_count=8)
    patient.resume()
    assert not patient.state.early_stopped


def test_run_state_round_trip_and_a_malformed_one_refused(folder_data, tmp_path):
    """last.pt keeps the run's position and record (RunState) under the keys runs of earlier versions have, loads
    back the same, and refuses a state whose parts are not of their kind by naming them."""
    trainer = make_trainer(folder_data, tmp_path, max_steps=5, validations_per_epoch=4)
    trainer.train()
    saved = utils.load_checkpoint(tmp_path / "last.pt")
    assert set(saved) == {"model", "optimizer", "scaler", "step", "epoch", "batch_in_epoch", "history", "best",
                          "callbacks", "train_seconds", "images_trained", "wall_seconds", "torch_rng", "device_rng",
                          "signature", "data", "record"}  # record: config.json's copy, since issue 32
    loaded = RunState()
    loaded.load_state_dict(saved, early_stop_count=1)
    assert loaded.state_dict() == trainer.state.state_dict() and loaded.step == 5
    losses = loaded.validation_losses()
    assert loaded.early_stopped == (losses.index(min(losses)) < len(losses) - 1)  # derived, never saved
    for key, wrong in [("best", {"step": 3}), ("images_trained", 1.5), ("batch_in_epoch", None)]:
        utils.save_checkpoint({**saved, key: wrong}, tmp_path / "last.pt")
        with pytest.raises(UserError, match=f"no valid {key}"):
            make_trainer(folder_data, tmp_path).resume()
