"""Task 2: a small CNN on CIFAR-10 (report: train 0.915, validation 0.740, test 0.739).

Three blocks of conv 5x5 (padding 2) + ReLU + max-pool 2x2 with 32, 64 and 128 filters,
then a 64-unit fully connected layer and 10 outputs: 390,410 parameters.
SGD, learning rate 0.05, batch size 64, at most 10 epochs, early stopping after 4
validations without improvement. Writes plots/task2.png (Figure 2) and runs/task2/.
"""
from torch import nn

import cli

HYPERPARAMETERS = dict(epochs=10, batch_size=64, lr=0.05, early_stop_count=4, optimizer="sgd")


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
    parser = cli.make_parser(__doc__, "task2", **HYPERPARAMETERS)
    args = cli.parse(parser, argv)
    return cli.train(args, Task2Model, title="Task 2")


if __name__ == "__main__":
    cli.main(main)
