"""Task 4a: transfer learning with torchvision's ImageNet-pretrained ResNet-18 on CIFAR-10 (Figure 6).

The 1000-class head is replaced by a 512 -> 10 linear layer. Only the last residual
stage (layer4) and the new head are trained (--finetune all trains everything).
Each batch is resized to 224x224 (bilinear, on the training device) and normalised
with the ImageNet mean and std. SGD (as in the report), learning rate 5e-4, batch size 32, at most
5 epochs, early stopping after 4 validations without improvement. Writes plots/task4a.png and runs/task4a/.

ImageNet weights come from the torch hub cache (resnet18-f37072fd.pth, downloaded once);
offline, pass a local copy with --weights PATH, or --weights none for random weights.
On a CPU this is slow: --image-size 64 and --subset make cheap trial runs.
"""
import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

from torch import nn

import cli
import dataloaders
import resnet
from runs import Run
from utils import set_seed

RECIPE = dict(epochs=5, batch_size=32, lr=5e-4)
# Offline, with random weights and small images: what the pieces do, not what they score (docs/task4.md).
SMOKE = ("--weights none --image-size 64 --subset 1000 --max-steps 20", "random weights, no download; about 10 s "
         "on a 2-core CPU")


def transfer_model(pretrained: nn.Module, finetune: str = "last") -> nn.Module:
    """The ImageNet network with a new 10-class head; 'last' trains only layer4 and the head."""
    return resnet.set_trainable(resnet.replace_head(pretrained), finetune)


def main(argv=None):
    parser = cli.training_parser(__doc__, "task4a", smoke=SMOKE, **RECIPE)
    model = parser.add_argument_group("model")
    resnet.add_weights_arguments(model, checkpoint=False)
    model.add_argument("--finetune", choices=("last", "all"), default="last",
                       help="last: train layer4 and the new head only; all: train every layer")
    model.add_argument("--image-size", type=cli.positive_int, default=224,
                       help="CIFAR images are resized to this many pixels square")
    args = cli.parse(parser, argv)
    if args.image_size < 32:
        parser.error(f"--image-size {args.image_size} is too small: ResNet-18 needs at least 32 pixels")
    return cli.for_each_seed(args, train)


def train(args):
    # Read the weights before the data, so missing weights fail in seconds; seeded so that
    # --weights none starts from the same random network every time. (--evaluate-only takes every
    # weight from best.pt.)
    set_seed(args.seed)
    pretrained = resnet.pretrained_resnet18("none" if args.evaluate_only else args.weights)
    run = Run.start(args, title="Task 4a: ResNet-18 transfer learning")
    train_loader, val_loader, test_loader = run.load_cifar10(transform=dataloaders.imagenet_transform(args.image_size))
    trainer = run.trainer(transfer_model(pretrained, args.finetune), train_loader, val_loader, test_loader)
    run.fit(trainer)
    return run.finish(trainer)


if __name__ == "__main__":
    cli.main(main)
