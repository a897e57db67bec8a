"""Task 3d: the best model, >= 90% CIFAR-10 test accuracy in at most 10 epochs on a 2-core CPU.

A plain VGG-like network with batch normalisation, in the spirit of the report's models, sized
so that ten epochs, validation and the final evaluation fit in 15 minutes on two CPU cores
(bf16 autocast). The recipe re-derives the ideas of Keller Jordan's airbench and David Page's
"How to train your ResNet" for a short schedule; all of it is in this file:

- a frozen first layer of 2x2 filters that whitens the image patches, fitted on training images
  before the first step (FitWhitening), its bias trained for the first 3 epochs only (FreezeWhiteningBias);
- three groups of conv 3x3 -> max-pool -> BN -> GELU -> conv 3x3 -> BN -> GELU (the last group, at
  3x3 pixels, has a third conv -> BN -> GELU), identity-initialised convolutions, BatchNorm without a
  learnt scale and with a fast-learning shift;
- label smoothing 0.2; the conv filters trained with Muon (orthogonalised momentum, Keller Jordan's
  airbench94_muon), the BatchNorm shifts and the classifier with Nesterov SGD; a triangular
  learning-rate schedule (warm-up to the peak at 23% of the steps, then linear decay); weight
  averaging every 5 steps (Lookahead);
- per batch, on the device: flips that alternate from epoch to epoch and translations of up to
  2 pixels with mirrored borders;
- test-time augmentation as the evaluation function: the prediction averages the logits of the
  image and its mirror image.

Writes plots/task3d.png (Figure 5) and runs/task3d/.
"""
from __future__ import annotations

import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import argparse
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import cli
import dataloaders
from runs import Run
from trainer import Callback, graph_ready


# ---------------------------------------------------------------- the recipe
#
# What it gave: 0.9040 ± 0.0028 test accuracy (mean ± sample std, seeds 0-2, bf16; fp32: 0.9044 ± 0.0002), every
# run over 0.90, in 10 epochs of about 7.5 minutes each (bf16) on a 2-core Intel Xeon with AMX, torch 2.14.1.
# docs/task3d.md has those runs, the other machines, and the experiments that chose each number below.

@dataclass(frozen=True)
class Recipe:
    """Every number Task 3d chose, with its unit, declared once: the shared flags' defaults (`shared`) and this
    script's own flags' defaults come from here, the rest shape the network and the schedule."""
    # the shared flags (cli.training_parser)
    epochs: int = 10                  # passes over the training images
    batch_size: int = 256             # training images per step
    lr: float = 0.375                 # SGD's peak learning rate per step (BatchNorm shifts, classifier): airbench's
    #                                   0.75 at 512 images per step, the same per image
    momentum: float = 0.85            # SGD's (Nesterov) momentum
    weight_decay: float = 1.3e-3      # SGD's L2 weight decay, per step (airbench's, per image as lr)
    optimizer: str = "sgd"
    augment: bool = True              # flips and translations, per image on the device
    early_stop_count: int = 10        # validations without a lower loss: 10 epochs never stop early
    validations_per_epoch: int = 1
    # the network
    widths: tuple = (64, 192, 256)    # channels of the three conv groups
    depths: tuple = (2, 2, 3)         # convolutions per group: a third, cheap at 3x3 pixels, in the last
    bias_gain: float = 8.0            # the BatchNorm shift is stored divided by this, so plain SGD moves it
    #                                   gain**2 = 64 times faster than the weights (airbench's "bias scaler")
    logit_scale: float = 1 / 9        # times the logits: small at first, the early high-rate steps stay stable
    whitening_images: int = 256       # training images the whitening filters are fitted on (one batch, augmented
    #                                   as the first: what the recipe was tuned with)
    whitening_bias_epochs: int = 3    # epochs the whitening layer's bias trains (airbench's), then frozen: later
    #                                   steps skip the backward pass through the layer
    # the optimizer and the schedule
    muon_lr: float = 0.03             # Muon's peak rate for the conv filters: about the angle a
    #                                   filter bank turns by per step (its norm is held fixed)
    muon_momentum: float = 0.85       # Muon's Nesterov momentum
    warmup_fraction: float = 0.23     # of the steps, to the peak learning rate
    start_factor: float = 0.2         # the first step's learning rate, times the peak
    end_factor: float = 0.07          # the last step's learning rate, times the peak
    label_smoothing: float = 0.2      # of the target's 1, spread evenly over the ten classes
    lookahead_every: int = 5          # steps between pulls of the weights into their running average
    lookahead_decay: float = 0.95     # the average's decay per step at the end of training (0 at the start)
    # augmentation and evaluation
    crop_padding: int = 2             # pixels an image is translated by at most (the border mirrored)
    tta: str = "flip"                 # test-time augmentation: the image and its mirror image (TTA_LEVELS)

    def shared(self) -> dict:
        """The shared flags' defaults."""
        return {name: getattr(self, name) for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                                       "optimizer", "augment", "early_stop_count",
                                                       "validations_per_epoch")}


RECIPE = Recipe()
TTA_LEVELS = ("none", "flip", "flip-translate")
AUGMENT_HELP = ("per image: flips that alternate (a random half mirrored in the first epoch, then every image "
                "switches each epoch) and translations of up to --crop-padding pixels whose uncovered border is "
                "the image's edge mirrored")
# Until a GPU run has shown that this step captured as a CUDA graph (Muon's tensor learning rates, fused SGD,
# in-place gradient copies) trains as it does eagerly, it is captured only when --cuda-graphs asks.
CUDA_GRAPHS_OFF = "Muon's captured step has not yet been checked against its eager step on a GPU"
SMOKE = ("--max-steps 20 --subset 1000", "about a minute on a 2-core CPU")  # a step costs more than Task 2's


# ---------------------------------------------------------------- the model

class WhiteningConv(nn.Conv2d):
    """2x2 convolution whose frozen filters whiten 2x2 patches: +/- each eigenvector / sqrt(eigenvalue).

    `fit` computes the filters from training images (FitWhitening calls it before the first step).
    """

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4, bias: bool = True):
        super().__init__(in_channels, 2 * in_channels * kernel_size ** 2, kernel_size, padding=0, bias=bias)
        self.weight.requires_grad = False
        self.eps = eps

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        channels, k = self.in_channels, self.kernel_size[0]
        x = images.float()
        patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * k * k)
        covariance = patches.T @ patches / len(patches)
        # On the CPU, where every device has an eigensolver (Apple's MPS has none): a 12x12 matrix.
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.cpu())
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.eps)[:, None])
        filters = filters.reshape(-1, channels, k, k)
        self.weight.copy_(torch.cat([filters, -filters]))
        if self.bias is not None:
            self.bias.zero_()


class ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm with the scale fixed at 1 and a shift learning RECIPE.bias_gain**2 times faster."""

    def __init__(self, channels: int, momentum: float = 0.4):
        # A high momentum lets the running statistics follow the fast-changing early network.
        super().__init__(channels, eps=1e-12, momentum=momentum, affine=False)
        self.shift = nn.Parameter(torch.zeros(channels))
        # A fixed scale of ones, passed explicitly: with weight=None, CUDA's batch-norm backward returns
        # an empty weight gradient that autograd rejects. Not saved, not trained.
        self.register_buffer("scale", torch.ones(channels), persistent=False)

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.scale, self.shift * RECIPE.bias_gain,
                            self.training, self.momentum, self.eps)


def identity_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution whose first filters start as the identity: an implicit residual at init."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(in_channels, out_channels)])
    return conv


def conv_group(in_channels: int, out_channels: int, convs: int = 2) -> nn.Sequential:
    layers = [identity_conv(in_channels, out_channels), nn.MaxPool2d(2), ShiftOnlyBatchNorm(out_channels), nn.GELU()]
    for _ in range(convs - 1):
        layers += [identity_conv(out_channels, out_channels), ShiftOnlyBatchNorm(out_channels), nn.GELU()]
    return nn.Sequential(*layers)


class Task3dModel(nn.Module):
    def __init__(self, widths=RECIPE.widths, num_classes: int = 10, whitening_bias: bool = True,
                 depths=RECIPE.depths):
        super().__init__()
        whiten = WhiteningConv(bias=whitening_bias)
        self.feature_extractor = nn.Sequential(
            whiten, nn.GELU(),                                          # 3x32x32 -> 24x31x31
            conv_group(whiten.out_channels, widths[0], depths[0]),      # -> 15x15
            conv_group(widths[0], widths[1], depths[1]),                # -> 7x7
            conv_group(widths[1], widths[2], depths[2]),                # -> 3x3
            nn.MaxPool2d(3), nn.Flatten())                              # -> widths[2]
        self.classifier = nn.Linear(widths[2], num_classes, bias=False)

    @property
    def whitening(self) -> WhiteningConv:
        return self.feature_extractor[0]

    def forward(self, x):
        return self.classifier(self.feature_extractor(x)) * RECIPE.logit_scale

    def mirror_averaged(self, x):
        both = self(torch.cat([x, x.flip(3)]))
        return (both[:len(x)] + both[len(x):]) / 2


def predict_with_tta(model: Task3dModel, level: str = RECIPE.tta):
    """The evaluation function: logits averaged over the image and its mirror image (flip); flip-translate
    adds both shifted one pixel up-left and down-right at half the weight (airbench's level 2; docs/task3d.md
    has what it gave here)."""
    if level not in TTA_LEVELS:
        raise ValueError(f"tta must be one of {TTA_LEVELS}, not {level!r}")
    if level == "none":
        return model
    if level == "flip":
        return model.mirror_averaged

    def flip_translate(x):
        logits = model.mirror_averaged(x)
        height, width = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = model.mirror_averaged(torch.cat([padded[..., :height, :width], padded[..., 2:, 2:]]))
        return (logits + (shifted[:len(x)] + shifted[len(x):]) / 2) / 2
    return flip_translate


# ---------------------------------------------------------------- the optimizer

def orthogonalize(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Muon's quintic, whose
    coefficients trade exactness for speed: singular values end up near 1, not at 1)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update / (update.norm() + 1e-7)  # spectral norm <= 1
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.SGD):
    """SGD whose groups marked `orthogonalize` (the conv filters) take Keller Jordan's Muon step, as
    airbench94_muon does: Nesterov momentum (`muon_momentum`), then the update of each filter bank,
    flattened to out x (in*k*k), replaced by its orthogonalisation, then plain SGD's step (momentum 0).
    Before each step the bank is scaled back to norm sqrt(out): BatchNorm follows every filter, so only
    directions count, and the learning rate alone sets the angle each step turns them by.

    Not torch.optim.Muon: it takes 2-D parameters only and orthogonalises in bf16, which a CPU without
    bf16 instructions emulates. Here it runs in fp32 (the gradients' dtype) in every precision, so the
    optimizer's arithmetic does not change with --precision, only the network's (docs/task3d.md has
    what that cost and gave).
    """

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if not group.get("orthogonalize"):
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                momentum = self.state[p].setdefault("muon_momentum", torch.zeros_like(p.grad))
                momentum.lerp_(p.grad, 1 - group["muon_momentum"])
                update = p.grad.lerp(momentum, group["muon_momentum"]).flatten(1)
                p.mul_(len(p) ** 0.5 / p.norm())
                p.grad.copy_(orthogonalize(update).view(p.shape))  # in place: p's layout
        return super().step(closure)


def muon_optimizer(model: Task3dModel, config, lr: float, momentum: float, nesterov: bool = True) -> Muon:
    """Muon at `lr` for the trainable conv filters (no weight decay: their norm is fixed), SGD as the flags
    say for the rest (BatchNorm shifts, the classifier), in the form a captured CUDA-graph step needs
    (trainer.graph_ready, as every optimizer)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    filters = [p for p in trainable if p.ndim == 4]
    filter_lr, _ = graph_ready(config, lr, trainable[0].device)
    rest_lr, fused = graph_ready(config, config.lr, trainable[0].device)
    return Muon([dict(params=filters, lr=filter_lr, momentum=0.0, weight_decay=0.0, nesterov=False,
                      orthogonalize=True, muon_momentum=momentum),
                 dict(params=[p for p in trainable if p.ndim != 4])],
                lr=rest_lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=nesterov, **fused)


# ---------------------------------------------------------------- the recipe's steps

def lr_factor(step: int, total_steps: int) -> float:
    """Triangular schedule: RECIPE.start_factor -> 1 at RECIPE.warmup_fraction of the steps -> RECIPE.end_factor at
    the end."""
    start, end = RECIPE.start_factor, RECIPE.end_factor
    peak = max(1, int(RECIPE.warmup_fraction * total_steps))
    if step <= peak:
        return start + (1 - start) * step / peak
    return 1 + (end - 1) * min(1.0, (step - peak) / max(1, total_steps - peak))


class FitWhitening(Callback):
    """Before the first step: fit the whitening filters on `count` training images, the same images on
    every process (rank 0's filters are broadcast too, so that torchrun processes cannot differ)."""

    def __init__(self, model: Task3dModel, train_loader, count: int = RECIPE.whitening_images):
        self.model, self.train_loader, self.count = model, train_loader, count

    def on_train_start(self, trainer) -> None:
        if trainer.step > 0:  # resumed: the fitted filters came back with the weights
            return
        self.model.whitening.fit(trainer.prepare(self.train_loader.training_sample(self.count)))
        if trainer.distributed:
            dist.broadcast(self.model.whitening.weight.data, src=0)


class FreezeWhiteningBias(Callback):
    """The whitening layer's bias trains for the first `epochs` epochs' worth of steps only; afterwards no
    gradient flows back through the 31x31 first layers, and a step is cheaper. Derived from the step, so a
    resumed run freezes at the same step. (Under torchrun the Trainer wraps the model anew: parameters_changed.)"""

    def __init__(self, model: Task3dModel, epochs: int):
        self.model, self.epochs = model, epochs
        self.steps = None

    def on_train_start(self, trainer) -> None:
        # total_steps spans --epochs (or --max-steps, which then scales the bias's share alike).
        self.steps = math.ceil(trainer.total_steps * self.epochs / trainer.config.epochs)
        self.after_step(trainer)

    def after_step(self, trainer) -> None:
        bias = self.model.whitening.bias
        if bias.requires_grad and trainer.step >= self.steps:
            bias.requires_grad = False
            trainer.parameters_changed()


class Lookahead(Callback):
    """Weight averaging for short schedules (airbench's "lookahead"): every `every` steps the weights are
    pulled into a running average and training continues from the average.

    The average's decay grows as (step / total_steps)**3 up to decay**every: early on, while the
    learning rate is high and the weights move fast, nothing is averaged; towards the end the
    average smooths out the last steps' noise. The final step always updates, so the trained
    model is the average. BatchNorm running statistics are averaged with the weights. The average
    starts from the weights as training starts (before the whitening fit); last.pt keeps it.
    """

    def __init__(self, model: nn.Module, every: int, decay: float):
        self.model, self.every, self.decay = model, every, decay
        self.average = None
        self.pairs = None  # (averages, the model's tensors), paired once training starts

    def decay_at(self, step: int, total_steps: int) -> float:
        return self.decay ** self.every * (step / total_steps) ** 3

    def on_train_start(self, trainer) -> None:
        current = {name: t for name, t in self.model.state_dict().items() if t.is_floating_point()}
        if self.average is None:
            self.average = {name: t.detach().clone() for name, t in current.items()}
        self.pairs = ([self.average[name] for name in current], list(current.values()))

    @torch.no_grad()
    def after_step(self, trainer) -> None:
        step, total_steps = trainer.step, trainer.total_steps
        if step % self.every and step < total_steps:
            return
        averages, current = self.pairs
        # One kernel for all tensors on a GPU (the CPU does them one by one, as lerp_ and copy_ would).
        torch._foreach_lerp_(averages, current, 1 - self.decay_at(step, total_steps))
        torch._foreach_copy_(current, averages)

    def state_dict(self):
        return self.average

    def load_state_dict(self, state) -> None:
        self.average = {name: tensor.clone() for name, tensor in state.items()}


# ---------------------------------------------------------------- the run

def main(argv=None):
    parser = cli.training_parser(__doc__, "task3d", augment_help=AUGMENT_HELP, cuda_graphs_off=CUDA_GRAPHS_OFF,
                                 smoke=SMOKE, **RECIPE.shared())
    recipe = parser.add_argument_group("task 3d recipe")
    recipe.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True,
                        help="Nesterov momentum")
    recipe.add_argument("--widths", type=cli.positive_int, nargs=3, default=list(RECIPE.widths),
                        metavar=("W1", "W2", "W3"), help="channels of the three conv groups")
    recipe.add_argument("--depths", type=cli.positive_int, nargs=3, default=list(RECIPE.depths),
                        metavar=("D1", "D2", "D3"), help="convolutions in each of the three groups")
    recipe.add_argument("--tta", choices=TTA_LEVELS, default=RECIPE.tta,
                        help="test-time augmentation: average the predictions on each image and its "
                             "mirror image (flip), and on both shifted by one pixel (flip-translate)")
    recipe.add_argument("--whitening-images", type=cli.positive_int, default=RECIPE.whitening_images,
                        metavar="N",
                        help="training images the whitening filters are fitted on")
    recipe.add_argument("--whitening-bias-epochs", type=cli.non_negative_int, default=RECIPE.whitening_bias_epochs,
                        metavar="E", help="train the whitening layer's bias for the first E epochs, then freeze "
                                          "it (steps without the backward pass through that layer are faster); "
                                          "0: no bias")
    recipe.add_argument("--label-smoothing", type=float, default=RECIPE.label_smoothing, metavar="S",
                        help="the training target puts 1 - S on the true class and spreads S evenly over all ten")
    recipe.add_argument("--crop-padding", type=cli.non_negative_int, default=RECIPE.crop_padding, metavar="P",
                        help="random translation of up to this many pixels (with --augment)")
    recipe.add_argument("--lookahead-every", type=cli.non_negative_int, default=RECIPE.lookahead_every,
                        metavar="N",
                        help="every N steps, continue from a running average of the weights (0: off)")
    recipe.add_argument("--lookahead-decay", type=cli.fraction, default=RECIPE.lookahead_decay, metavar="D",
                        help="per-step decay of that average at the end of training (it ramps up from 0)")
    recipe.add_argument("--muon-lr", type=cli.non_negative_float, default=RECIPE.muon_lr, metavar="LR",
                        help="the conv filters' learning rate with Muon (--lr is the rest's); 0: the filters on "
                             "SGD too, as the rest")
    recipe.add_argument("--muon-momentum", type=cli.fraction, default=RECIPE.muon_momentum, metavar="M",
                        help="Muon's Nesterov momentum")
    args = cli.parse(parser, argv)
    if not 0 <= args.label_smoothing < 1:
        parser.error(f"--label-smoothing {args.label_smoothing} is out of range: must be in [0, 1)")
    if args.crop_padding >= 32:
        parser.error(f"--crop-padding {args.crop_padding} is out of range: a mirrored border must be "
                     "narrower than the 32-pixel image")
    return cli.for_each_seed(args, train)


def train(args):
    # Channels-last in fp32 too: this network's step is faster in it on CPUs (docs/task3d.md has by how much).
    run = Run.start(args, title="Task 3d", channels_last=True)
    augmentation = dataloaders.Augmentation(flip="alternate", crop_padding=args.crop_padding, padding_mode="reflect")
    train_loader, val_loader, test_loader = run.load_cifar10(augmentation=augmentation)
    model = Task3dModel(args.widths, whitening_bias=args.whitening_bias_epochs > 0, depths=args.depths)
    if run.is_main:
        print(f"{model}\nparameters: {sum(p.numel() for p in model.parameters()):,}")
    # In this order: the average starts from the weights before the whitening fit (as the recipe was tuned).
    callbacks = [Lookahead(model, args.lookahead_every, args.lookahead_decay)] if args.lookahead_every else []
    callbacks.append(FitWhitening(model, train_loader, args.whitening_images))
    if args.whitening_bias_epochs:
        callbacks.append(FreezeWhiteningBias(model, args.whitening_bias_epochs))
    if args.muon_lr:
        optimizer = muon_optimizer(model.to(run.device), run.config, args.muon_lr, args.muon_momentum, args.nesterov)
    else:
        optimizer = run.optimizer(model, nesterov=args.nesterov)
    trainer = run.trainer(model, train_loader, val_loader, test_loader,
                          optimizer=optimizer, lr_schedule=lr_factor,
                          loss_fn=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
                          predict=predict_with_tta(model, args.tta), callbacks=callbacks)
    run.fit(trainer)
    return run.finish(trainer)


if __name__ == "__main__":
    cli.main(main)
