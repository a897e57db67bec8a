"""Task 4a: transfer learning with torchvision's ImageNet-pretrained ResNet-18 on CIFAR-10.

The 1000-class head is replaced by a 512 -> 10 linear layer. Only the last residual
stage (layer4) and the new head are trained (--finetune all trains everything).
Each batch is resized to 224x224 (bilinear, on the training device) and normalised
with the ImageNet mean and std. SGD (as in the report), learning rate 5e-4, batch size 32, early stopping
after 4 validations without improvement. Writes plots/task4a.png (Figure 6) and runs/task4a/.

ImageNet weights come from the torch hub cache (resnet18-f37072fd.pth, downloaded once);
offline, pass a local copy with --weights PATH, or --weights none for random weights.
On a CPU this is slow: --image-size 64 and --subset make cheap trial runs.
"""
import cli
import dataloaders
import resnet
from utils import set_seed

HYPERPARAMETERS = dict(epochs=5, batch_size=32, lr=5e-4, early_stop_count=4, optimizer="sgd")


def main(argv=None):
    parser = cli.make_parser(__doc__, "task4a", **HYPERPARAMETERS)
    model = parser.add_argument_group("model")
    resnet.add_weights_arguments(model, checkpoint=False)
    model.add_argument("--finetune", choices=("last", "all"), default="last",
                       help="last: train layer4 and the new head only; all: train every layer")
    model.add_argument("--image-size", type=cli.positive_int, default=224,
                       help="CIFAR images are resized to this many pixels square")
    args = cli.parse(parser, argv)
    if args.image_size < 32:
        parser.error(f"--image-size {args.image_size} is too small: ResNet-18 needs at least 32 pixels")
    # Read the weights before the data, so missing weights fail in seconds; seeded so that
    # --weights none starts from the same random network every time.
    set_seed(args.seed)
    pretrained = resnet.pretrained_resnet18(args.weights)

    def build_model():
        return resnet.set_trainable(resnet.replace_head(pretrained), args.finetune)

    return cli.train(args, build_model, title="Task 4a: ResNet-18 transfer learning",
                     transform=dataloaders.imagenet_transform(args.image_size),
                     extra_config={"weights": args.weights, "finetune": args.finetune,
                                   "image_size": args.image_size})


if __name__ == "__main__":
    cli.main(main)
