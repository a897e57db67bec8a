"""Task 2: a small CNN on CIFAR-10 (the report's Figure 2).

Three blocks of conv 5x5 (padding 2) + ReLU + max-pool 2x2 with 32, 64 and 128 filters,
then a 64-unit fully connected layer and 10 outputs: 390,410 parameters.
The recipe is the shared default (settings.TrainConfig): SGD, learning rate 0.05, batch size 64,
at most 10 epochs, early stopping after 4 validations without improvement.
Writes plots/task2.png and runs/task2/.
"""
import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

from torch import nn

import cli
from runs import Run


def conv_block(in_channels: int, out_channels: int) -> list:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=5, stride=1, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2)]


class Task2Model(nn.Module):
    def __init__(self, image_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.feature_extractor = nn.Sequential(
            *conv_block(image_channels, 32), *conv_block(32, 64), *conv_block(64, 128))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.feature_extractor(x))


def main(argv=None):
    args = cli.parse(cli.training_parser(__doc__, "task2"), argv)
    return cli.for_each_seed(args, train)


def train(args):
    run = Run.start(args, title="Task 2")
    train_loader, val_loader, test_loader = run.load_cifar10()
    trainer = run.trainer(Task2Model(), train_loader, val_loader, test_loader)
    run.fit(trainer)
    return run.finish(trainer)


if __name__ == "__main__":
    cli.main(main)
