"""Task 4c: activations of ResNet-18's last convolutional stage for a photo.

The image (default images/zebra.jpg, shipped with the assignment) is resized to 224x224,
ImageNet-normalised and passed through every layer but the average pooling and the final
fully connected layer: 512 maps of 7x7. The first ten (--count) are shown in greyscale,
five per row. Writes plots/task4c.png.
"""
import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import math
from pathlib import Path

import torch
from torch import nn

import cli
import figures
import resnet
from utils import check_writable

FEATURE_MAPS = 512


@torch.no_grad()
def last_stage(model, image):
    """Activations after layer4, (512, 7, 7) for a 224x224 image."""
    features = nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc
    return features(image)[0]


def make_figure(activations, count, title=""):
    plt = figures.pyplot()
    columns = min(5, count)
    rows = math.ceil(count / columns)
    width = figures.WIDTH  # a report's text width; the maps scale to it
    figure, axes = plt.subplots(rows, columns, figsize=(width, (width / columns + 0.25) * rows + 0.5), squeeze=False,
                                layout="constrained")
    for index, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= count:
            axis.set_axis_off()
            continue
        axis.imshow(resnet.to_displayable(activations[index]), cmap="gray", interpolation="nearest")
        axis.set_title(f"activation {index}")
    figure.suptitle(figures.wrapped(title))
    return figure


def main(argv=None):
    parser = resnet.visualisation_parser(__doc__)
    parser.add_argument("--count", type=int, default=10,
                        help=f"how many of the {FEATURE_MAPS} last-stage maps to show, from the first")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= FEATURE_MAPS:
        parser.error(f"--count {args.count} out of range: the last stage has {FEATURE_MAPS} maps, choose 1 "
                     f"to {FEATURE_MAPS}")
    image = resnet.load_image(resnet.resolve_image(args.image))
    model = resnet.model_from_args(args)
    check_writable(args.plot_dir)  # every input read; fail before the model runs, not at the end
    activations = last_stage(model, image)
    title = f"Last conv stage activations on {Path(args.image).name} ({resnet.describe_weights(args)})"
    path = figures.save(make_figure(activations, args.count, title), Path(args.plot_dir) / "task4c.png")
    print(f"figure: {path}")
    return path


if __name__ == "__main__":
    cli.main(main)
