"""Task 3, Model 2: more and smaller filters.

Conv 3x3 with padding 2 (which GROWS each map by 2 pixels, as in the report), max-pool 2x2:
    conv 64 + ReLU, max-pool     32 -> 34 -> 17
    conv 128 + ReLU, max-pool    17 -> 19 -> 9
    conv 256 + ReLU, max-pool     9 -> 11 -> 5
    flatten (256 x 5 x 5 = 6400), FC 512 + ReLU, FC 10
The shared recipe (SGD, learning rate 0.05, batch size 64, early stopping as in Task 2).
"""
import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import torch
from torch import nn

import cli
from runs import Run
from task3_model1 import ACTIVATIONS


class Model2(nn.Module):
    def __init__(self, activation: str = "relu", num_classes: int = 10):
        super().__init__()
        act = ACTIVATIONS[activation]
        layers, channels = [], 3
        for width in (64, 128, 256):
            layers += [nn.Conv2d(channels, width, kernel_size=3, stride=1, padding=2), act(),
                       nn.MaxPool2d(kernel_size=2, stride=2)]
            channels = width
        self.feature_extractor = nn.Sequential(*layers)
        # The flatten size follows from the padding: measure it instead of hard-coding 6400.
        with torch.no_grad():
            flat = self.feature_extractor(torch.zeros(1, 3, 32, 32)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, 512), act(), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(self.feature_extractor(x))


def main(argv=None):
    parser = cli.training_parser(__doc__, "task3_model2")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                        help="the activation after every convolution and hidden linear layer")
    return cli.for_each_seed(cli.parse(parser, argv), train)


def train(args):
    run = Run.start(args, title="Task 3 Model 2")
    train_loader, val_loader, test_loader = run.load_cifar10()
    trainer = run.trainer(Model2(args.activation), train_loader, val_loader, test_loader)
    run.fit(trainer)
    return run.finish(trainer)


if __name__ == "__main__":
    cli.main(main)
