"""What the reference report says: the one table of its facts that the report, the README and the docs show.

The reference is a published student report of this assignment, trained on the original CIFAR-10. Each
fact is kept with the question it answers ("2b", "3b"...) and, in `printed`, the words it was printed with,
so that tests/test_reference.py finds every one in the reference's text under that question. Where the
reference gives no number (Task 3d's accuracy, Task 4a's, anything before deepening in 3c), there is no
fact here and the report says "not given".
"""
from __future__ import annotations

from dataclasses import dataclass

DESCRIPTION = ("a published student report of this assignment, whose models were trained on the original "
               "CIFAR-10 (torchvision's cifar-10-batches-py)")
NOT_GIVEN = "not given"


@dataclass(frozen=True)
class Fact:
    question: str        # where the reference says it: "1a", "2b", "3b" ...
    value: object        # a number, a list, or the reference's own words (quoted as they are printed)
    printed: tuple = ()  # the words a number or list is printed with in the reference (found under `question`)


# Task 1: the theory answers. 1a's result as printed: the reference's table (converted from a PDF) has a
# sixth column, blank in rows 1 and 3, that holds a stray 3 in row 2; without it the result is 3x5.
IMAGE = Fact("1a", [[3, 0, 1, 7, 3], [6, 4, 0, 4, 5], [4, 6, 3, 2, 4]], ("3\t0\t1\t7\t3", "6\t4\t0\t4\t5",
                                                                         "4\t6\t3\t2\t4"))
KERNEL = Fact("1a", [[0, 1, 0], [1, -4, 1], [0, 1, 0]], ("0\t1\t0\n1\t-4\t1\n0\t1\t0",))
CONVOLUTION_AS_PRINTED = Fact("1a", [[-6, None, 8, 3, -20, 0], [-13, 3, -4, 12, -2, -9], [-4, None, -13, -4, 3, -9]],
                              ("-6\t\t8\t3\t-20\t0", "-13\t3\t-4\t12\t-2\t-9", "-4\t\t-13\t-4\t3\t-9"))
STRAY = (1, 1)  # (row, column) of the stray value in CONVOLUTION_AS_PRINTED
PADDING_1A = Fact("1a", "zero padding")
MAX_POOLING = Fact("1b", "returns nearly identical outputs from two inputs that only differ in a small transitional "
                         "shift")
SAME_PADDING = Fact("1c", 2, ("padding of 2",))
KERNEL_SIZE = Fact("1d", 9, ("9x9",))
POOLED_SIZE = Fact("1e", 252, ("252x252",))
SECOND_LAYER_SIZE = Fact("1f", 250, ("250x250",))
PARAMETERS = Fact("1g", [2432, 51264, 204928, 131136, 650], ("= 2432", "= 51264", "= 204928", "= 131136", "= 650",
                                                             "= 390410"))


def convolution_result() -> list[list[int]]:
    """1a's result as the reference means it: the printed table without its stray column."""
    return [[value for column, value in enumerate(row) if column != STRAY[1]] for row in CONVOLUTION_AS_PRINTED.value]


# Final numbers of the runs, by run name (report_runs.RUNS), split and measure.
RESULTS = {
    "task2": Fact("2b", {"train": {"loss": 0.257, "accuracy": 0.915}, "validation": {"loss": 0.834, "accuracy": 0.740},
                         "test": {"loss": 0.858, "accuracy": 0.739}},
                  ("Training\\_loss: 0.257", "Training\\_acc: 0.915", "Validation\\_loss: 0.834",
                   "Validation\\_accuracy: 0.740", "Test\\_loss: 0.858", "Test\\_accuracy: 0.739")),
    "task3_model1": Fact("3b", {"train": {"loss": 0.254, "accuracy": 0.913},
                                "validation": {"loss": 0.604, "accuracy": 0.805},
                                "test": {"loss": 0.596, "accuracy": 0.810}},
                         ("Training Loss\t0.254", "Validation Loss\t0.604", "Test Loss\t0.596",
                          "Training Accuracy\t0.913", "Validation Accuracy\t0.805", "Test Accuracy\t0.810")),
    "task3_model2": Fact("3b", {"train": {"loss": 0.132, "accuracy": 0.960},
                                "validation": {"loss": 0.832, "accuracy": 0.767},
                                "test": {"loss": 0.862, "accuracy": 0.763}},
                         ("0.254\t0.132", "0.604\t0.832", "0.596\t0.862", "0.913\t0.960", "0.805\t0.767",
                          "0.810\t0.763")),
}

# Words where the reference gives words, not numbers.
DEEPENED = Fact("3c", "a little over 80%", ("By applying twice as many layers we got a test accuracy of a little "
                                            "over 80%",))
DEEPENING_EFFECT = Fact("3c", "The things that had the greatest effect on our network was to make it deeper")
BEST_MODEL = Fact("3d", "We applied even more depth to our model, and also increased the amount of filters at the "
                        "final layers. This had a small improvement on the network, and seemed to be more consistent "
                        "than before")
# Task 3c's other experiments: what the reference found for each (by report_runs' experiment names).
EXPERIMENTS = {
    "activation": Fact("3c", "did not find any that were an improvement to ReLU"),
    "optimizer": Fact("3c", "tried the adam-optimizer and the RMSprop-optimizer. These did notimprove our networks"),
    "l2": Fact("3c", "applied some L2 regularization, but this did not improve our network either"),
    "wider": Fact("3c", "the training accuracy became really high, while the test accuracy only had a little "
                        "improvement"),
}

# Hyperparameters, by run name: (setting, value as our flags write it, as printed).
HYPERPARAMETERS = {
    "task3_model1": Fact("3a", {"lr": 0.05, "batch_size": 64},
                         ("The learning rate we used for this model was 0.05 and the batch size was 64",)),
    "task3_model2": Fact("3a", {"lr": 0.05, "batch_size": 64},
                         ("The learning rate we used for this model was 0.05 and the batch size was 64",)),
    "task4a": Fact("4a", {"optimizer": "sgd", "batch_size": 32, "lr": 5e-4},
                   ("Optimizer: Stochastich Gradient Descent", "Batch size: 32", "Learning rate: 5\\*10<sup>-4</sup>")),
}

# Task 3a's layer tables: (layer, type, filters or units, activation) as the reference prints them. Four of
# Model 1's pooling and normalisation rows print "1" as their activation where the others print "-" (kept).
LAYERS = {
    "task3_model1": Fact("3a", [
        ("1", "Conv2D", "32", "ReLU"), ("1", "BatchNorm2D", "-", "-"), ("2", "Conv2D", "32", "ReLU"),
        ("2", "MaxPool2D", "-", "1"), ("3", "Conv2D", "64", "ReLU"), ("3", "BatchNorm2D", "-", "1"),
        ("4", "Conv2D", "64", "ReLU"), ("4", "MaxPool2D", "-", "1"), ("5", "Conv2D", "128", "ReLU"),
        ("5", "BatchNorm2D", "-", "1"), ("6", "Conv2D", "128", "ReLU"), ("6", "MaxPool2D", "-", "-"),
        ("", "Flatten", "", ""), ("7", "Fully-Connected", "512", "ReLU"), ("8", "Fully-Connected", "64", "ReLU"),
        ("9", "Fully-Connected", "10", "Softmax")],
        ("1\tConv2D\t32\tReLU", "6\tConv2D\t128\tReLU", "7\tFully-Connected\t512\tReLU",
         "8\tFully-Connected\t64\tReLU", "9\tFully-Connected\t10\tSoftmax")),
    "task3_model2": Fact("3a", [
        ("1", "Conv2D", "64", "ReLU"), ("1", "MaxPool2D", "-", "-"), ("2", "Conv2D", "128", "ReLU"),
        ("2", "MaxPool2D", "-", "-"), ("3", "Conv2D", "256", "ReLU"), ("3", "MaxPool2D", "-", "-"),
        ("", "Flatten", "", ""), ("4", "Fully-Connected", "512", "ReLU"), ("5", "Fully-Connected", "10", "Softmax")],
        ("1\tConv2D\t64\tReLU", "3\tConv2D\t256\tReLU", "4\tFully-Connected\t512\tReLU",
         "5\tFully-Connected\t10\tSoftmax")),
}
CONVOLUTIONS = {  # Task 3a's filters and pooling: sizes, padding and strides
    "task3_model1": Fact("3a", {"filters": "5x5", "padding": 2, "stride": 1, "pooling": "2x2", "pooling stride": 2,
                                "batch normalisation": "yes"},
                         ("a filter size of  $5\\times5$  with a padding of 2 and a stride of 1",
                          "Each MaxPool2D layer has a stride of 2 and a kernel size of  $2\\times2$",
                          "We also applied batch normalization")),
    "task3_model2": Fact("3a", {"filters": "3x3", "padding": 2, "stride": 1, "pooling": "2x2", "pooling stride": 2,
                                "batch normalisation": NOT_GIVEN},
                         ("a filter size of  $3\\times3$  with a padding of 2 and a stride of 1",
                          "Each MaxPool2D layer has a stride of 2 and a kernel size of  $2\\times2$")),
}

# Task 4b's filters and Task 4c's maps, as the reference chose them.
FILTER_INDICES = Fact("4b", [14, 26, 32, 49, 52], ("[14, 26, 32, 49, 52]",))
LAST_LAYER_MAPS = Fact("4c", 10, ("the activations of the ten first filters from the last convolutional layer",))

# The reference's figure numbers, by question (its 4c figure is numbered 7 again: ours is 8, and says so).
FIGURES = {"1a": Fact("1a", 1, ("Figure 1a: Image I", "Figure 1b: Kernel K", "Figure 1c: Image I after the")),
           "2a": Fact("2a", 2, ("Figure 2:",)), "3b": Fact("3b", 3, ("Figure 3:",)),
           "3c": Fact("3c", 4, ("Figure 4:",)), "3d": Fact("3d", 5, ("Figure 5:",)),
           "4a": Fact("4a", 6, ("Figure 6:",)), "4b": Fact("4b", 7, ("Figure 7:",)),
           "4c": Fact("4c", 7, ("Figure 7:",))}
FIRST_EXTRA_FIGURE = 9  # ours after the reference's (4c's is 8)


def every_fact() -> list[tuple[str, Fact]]:
    """(name, fact) of every fact above: what the reference test checks against the reference's text."""
    found = []
    for name, value in globals().items():
        if isinstance(value, Fact):
            found.append((name, value))
        elif isinstance(value, dict) and value and all(isinstance(v, Fact) for v in value.values()):
            found += [(f"{name}[{key!r}]", fact) for key, fact in value.items()]
    return found


def result(run: str, split: str, measure: str = "accuracy"):
    """The reference's final `measure` of `split` for one of our runs, or None where it gives none."""
    fact = RESULTS.get(run)
    return fact.value[split][measure] if fact else None


def result_text(run: str, split: str, measure: str = "accuracy") -> str:
    value = result(run, split, measure)
    return NOT_GIVEN if value is None else f"{value:.3f}"
