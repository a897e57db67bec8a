"""Task 3, Model 1: depth and batch normalisation.

Conv 5x5 (padding 2, stride 1) everywhere, max-pool 2x2:
    conv 32 + ReLU, BatchNorm | conv 32 + ReLU, max-pool
    conv 64 + ReLU, BatchNorm | conv 64 + ReLU, max-pool
    conv 128 + ReLU, BatchNorm | conv 128 + ReLU, max-pool
    flatten, FC 512 + ReLU, FC 64 + ReLU, FC 10
The shared recipe (SGD, learning rate 0.05, batch size 64, early stopping as in Task 2); the test
loss is tracked at every validation for the Task 3c figure.

--convs-per-stage 1 trains the Task 3c "before deepening" network instead (one conv +
ReLU + BatchNorm + max-pool per stage, same head) into runs/task3c_before. Task 3c's other
experiments are one flag each (--activation, --optimizer, --weight-decay, --widths for more
filters); report.py lists their commands.
"""
import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

from torch import nn

import cli
from runs import Run

# Activation functions Model 1 and Model 2 can switch between (--activation).
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh}


WIDTHS = (32, 64, 128)  # filters of the three stages


class Model1(nn.Module):
    def __init__(self, convs_per_stage: int = 2, activation: str = "relu", num_classes: int = 10,
                 widths=WIDTHS):
        super().__init__()
        act = ACTIVATIONS[activation]
        layers, channels = [], 3
        for width in widths:
            for index in range(convs_per_stage):
                layers += [nn.Conv2d(channels, width, kernel_size=5, stride=1, padding=2), act()]
                channels = width
                # BatchNorm after the first conv of a stage, pooling after the last one.
                if index == 0:
                    layers.append(nn.BatchNorm2d(width))
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.feature_extractor = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(widths[-1] * 4 * 4, 512), act(), nn.Linear(512, 64), act(),
            nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.feature_extractor(x))


def main(argv=None):
    parser = cli.training_parser(__doc__, "task3_model1", track_test=True)
    parser.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                        help="the activation after every convolution and hidden linear layer")
    parser.add_argument("--convs-per-stage", type=int, choices=(1, 2), default=2,
                        help="1: the Task 3c network before deepening (runs/task3c_before)")
    parser.add_argument("--widths", type=cli.positive_int, nargs=3, default=list(WIDTHS), metavar="W",
                        help="filters of the three stages (Task 3c's \"more filters\": 64 128 256)")
    args = cli.parse(parser, argv)
    if args.convs_per_stage == 1:
        args.name = "task3c_before"
    return cli.for_each_seed(args, train)


def train(args):
    deep = args.convs_per_stage == 2
    run = Run.start(args, title="Task 3 Model 1" if deep else "Task 3c before deepening")
    train_loader, val_loader, test_loader = run.load_cifar10()
    model = Model1(args.convs_per_stage, args.activation, widths=args.widths)
    trainer = run.trainer(model, train_loader, val_loader, test_loader)
    run.fit(trainer)
    return run.finish(trainer)


if __name__ == "__main__":
    cli.main(main)
