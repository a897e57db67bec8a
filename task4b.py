"""Task 4b: the first convolution's filters and what they respond to in a photo (Figure 7).

The image (default images/zebra.jpg, shipped with the assignment) is resized to 224x224,
ImageNet-normalised and passed through ResNet-18's first convolution: 64 filters of 7x7,
stride 2, giving 64 activation maps of 112x112. For each chosen filter, the top row shows
its weights as a small RGB image and the bottom row its activation in greyscale.
Writes plots/task4b.png.
"""
import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

from pathlib import Path

import torch

import cli
import figures
import resnet
from utils import check_writable

DEFAULT_INDICES = (14, 26, 32, 49, 52)


@torch.no_grad()
def first_layer(model, image):
    """The first convolution's weights (64, 3, 7, 7) and its activations (64, 112, 112)."""
    return model.conv1.weight, model.conv1(image)[0]


def make_figure(weights, activations, indices, title=""):
    plt = figures.pyplot()
    width = figures.WIDTH  # a report's text width; the images scale to it
    figure, axes = plt.subplots(2, len(indices), figsize=(width, width / len(indices) * 2 + 0.8), squeeze=False,
                                layout="constrained")
    for column, index in enumerate(indices):
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(resnet.to_displayable(weights[index]), interpolation="nearest")
        top.set_title(f"filter {index}")
        bottom.imshow(resnet.to_displayable(activations[index]), cmap="gray")
        bottom.set_title(f"activation {index}")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(figures.wrapped(title))
    return figure


def main(argv=None):
    parser = resnet.visualisation_parser(__doc__)
    parser.add_argument("--indices", type=int, nargs="+", default=list(DEFAULT_INDICES),
                        help="which of the 64 first-layer filters to show")
    args = parser.parse_args(argv)
    bad = [i for i in args.indices if not 0 <= i < 64]
    if bad:
        parser.error(f"--indices {' '.join(map(str, bad))} out of range: the first layer has 64 filters, 0 to 63")
    image = resnet.load_image(resnet.resolve_image(args.image))
    model = resnet.model_from_args(args)
    check_writable(args.plot_dir)  # every input read; fail before the model runs, not at the end
    weights, activations = first_layer(model, image)
    title = f"First-layer filters and activations on {Path(args.image).name} ({resnet.describe_weights(args)})"
    path = figures.save(make_figure(weights, activations, args.indices, title), Path(args.plot_dir) / "task4b.png")
    print(f"figure: {path}")
    return path


if __name__ == "__main__":
    cli.main(main)
