"""Task 1 (theory): every answer computed, printed next to the reference's.

1a  a 3x5 image convolved with the 3x3 Laplacian kernel, zero padding, stride 1,
    computed by torch.nn.functional.conv2d and by a plain loop (they must agree);
1b  max pooling and a one-pixel shift: how many outputs of a 2x2 max pooling and of a 3x3
    convolution the shift of an image changes;
1c  the padding that keeps a 5x5 / stride 1 convolution's output the input size;
1d  the kernel size that takes 512x512 to 504x504 without padding;
1e  the size after 2x2 / stride 2 max pooling of that output;
1f  the size after a second 3x3 convolution (no padding, stride 1);
1g  the parameters of the Task 2 network, layer by layer, counted from task2.Task2Model.

Sizes are checked by running real torch layers on tensors of that size, not only by the
formula (W - F + 2P) / S + 1. The reference's answers are reference.py's. Exit code 1 when any answer
differs from the reference's.
"""
from __future__ import annotations

import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

import cli
import reference
import task2

# The assignment's image (Figure 1a) and the Laplacian kernel (Figure 1b); the kernel is symmetric
# under a 180-degree turn, so convolution and cross-correlation give the same result here.
IMAGE = reference.IMAGE.value
LAPLACIAN = reference.KERNEL.value

# The reference's answers, 1a's result without the stray value its printed table carries (reference.py).
REFERENCE = {
    "1a": reference.convolution_result(),
    "1c": reference.SAME_PADDING.value, "1d": reference.KERNEL_SIZE.value, "1e": reference.POOLED_SIZE.value,
    "1f": reference.SECOND_LAYER_SIZE.value, "1g": reference.PARAMETERS.value,
}


def convolve_loop(image, kernel):
    """True convolution (kernel turned 180 degrees), zero padding, stride 1, by hand."""
    rows, cols, size = len(image), len(image[0]), len(kernel)
    half = size // 2
    out = [[0] * cols for _ in range(rows)]
    for r in range(rows):
        for c in range(cols):
            total = 0
            for i in range(size):
                for j in range(size):
                    y, x = r + half - i, c + half - j
                    if 0 <= y < rows and 0 <= x < cols:
                        total += image[y][x] * kernel[i][j]
            out[r][c] = total
    return out


def convolve_torch(image, kernel):
    # conv2d is a cross-correlation: flipping the kernel makes it a convolution.
    x = torch.tensor(image, dtype=torch.float64)[None, None]
    k = torch.tensor(kernel, dtype=torch.float64).flip(0, 1)[None, None]
    return F.conv2d(x, k, padding=len(kernel) // 2)[0, 0].round().long().tolist()


def output_size(layer: nn.Module, size: int) -> int:
    """Side length after running `layer` on a real single-channel size x size image."""
    with torch.no_grad():
        return layer(torch.zeros(1, 1, size, size)).shape[-1]


def same_padding(kernel_size: int = 5, size: int = 32) -> int:
    """The padding for which a stride-1 convolution keeps the input size."""
    return next(p for p in range(kernel_size)
                if output_size(nn.Conv2d(1, 1, kernel_size, padding=p, bias=False), size) == size)


def kernel_for(size_in: int = 512, size_out: int = 504) -> int:
    """The (odd or even) kernel size that shrinks size_in to size_out without padding."""
    return next(k for k in range(1, size_in + 1)
                if output_size(nn.Conv2d(1, 1, k, bias=False), size_in) == size_out)


def layer_parameters(model: nn.Module) -> list[tuple[str, str, int]]:
    """(module name, description, parameter count) for every layer that has parameters."""
    rows = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own:
            shapes = " + ".join("x".join(map(str, p.shape)) for p in own)
            rows.append((name, f"{type(module).__name__} {shapes}", sum(p.numel() for p in own)))
    return rows


def shifted_right(image: torch.Tensor) -> torch.Tensor:
    """The image moved one pixel to the right; the new first column is zero."""
    return F.pad(image, (1, 0))[..., :image.shape[-1]]


def pool_and_convolve(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2x2 / stride 2 max pooling, 3x3 convolution with the 1a kernel, zero padding) of a (size, size) image."""
    x = image[None, None].float()
    kernel = torch.tensor(LAPLACIAN, dtype=torch.float32)[None, None]
    return F.max_pool2d(x, 2, stride=2)[0, 0], F.conv2d(x, kernel, padding=1)[0, 0]


def shift_demonstration(size: int = 8, square: int = 3, corner: tuple = (2, 2)) -> dict:
    """1b: a dark image with a bright square and the same image one pixel to the right; how many values of the
    input, of the max-pooled output and of the convolved output the shift changes. `everywhere`: over every
    place the square (and its shift) fits, in how many the pooled output stays the same and which share of the
    two outputs' values."""
    def example(top: int, left: int):
        image = torch.zeros(size, size)
        image[top:top + square, left:left + square] = 9
        return image, shifted_right(image)

    image, moved = example(*corner)
    (pooled, convolved), (pooled_moved, convolved_moved) = pool_and_convolve(image), pool_and_convolve(moved)
    same_pooled, kept_pooled, kept_convolved = 0, [], []
    places = [(top, left) for top in range(size - square + 1) for left in range(size - square)]
    for top, left in places:
        (p, c), (p_moved, c_moved) = (pool_and_convolve(x) for x in example(top, left))
        same_pooled += bool(torch.equal(p, p_moved))
        kept_pooled.append((p == p_moved).float().mean().item())
        kept_convolved.append((c == c_moved).float().mean().item())
    return {"image": image.long().tolist(), "shifted": moved.long().tolist(),
            "pooled": pooled.long().tolist(), "pooled_shifted": pooled_moved.long().tolist(),
            "changed": {"input": int((image != moved).sum()), "max pooling": int((pooled != pooled_moved).sum()),
                        "convolution": int((convolved != convolved_moved).sum())},
            "values": {"input": image.numel(), "max pooling": pooled.numel(), "convolution": convolved.numel()},
            "everywhere": {"places": len(places), "pooled_identical": same_pooled,
                           "pooled_kept": sum(kept_pooled) / len(places),
                           "convolved_kept": sum(kept_convolved) / len(places)}}


def answers() -> dict:
    conv_out = convolve_torch(IMAGE, LAPLACIAN)
    loop_out = convolve_loop(IMAGE, LAPLACIAN)
    if conv_out != loop_out:
        raise AssertionError(f"conv2d {conv_out} and the loop {loop_out} disagree")
    kernel = kernel_for(512, 504)
    after_conv = output_size(nn.Conv2d(1, 1, kernel, bias=False), 512)
    pooled = output_size(nn.MaxPool2d(2, stride=2), after_conv)
    second = output_size(nn.Conv2d(1, 1, 3, bias=False), pooled)
    layers = layer_parameters(task2.Task2Model())
    return {"1a": conv_out, "1b": shift_demonstration(), "1c": same_padding(5), "1d": kernel, "1e": pooled,
            "1f": second, "1g": [count for _, _, count in layers], "1g_layers": layers}


def main(argv=None) -> int:
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    ours = answers()
    mismatches = [key for key in REFERENCE if ours[key] != REFERENCE[key]]

    def mark(key):
        return "matches the reference" if key not in mismatches else "DIFFERS from the reference"

    print("1a  image * Laplacian (zero padding, stride 1); conv2d and the plain loop agree:")
    for ours_row, printed in zip(ours["1a"], reference.CONVOLUTION_AS_PRINTED.value):
        print(f"      {str(ours_row):28s} reference {' '.join('.' if v is None else str(v) for v in printed)}")
    row, column = reference.STRAY
    print(f"    {mark('1a')} (the reference's printed table has a sixth column, blank but for a stray "
          f"{reference.CONVOLUTION_AS_PRINTED.value[row][column]} in row {row + 1}; without it the results agree)")
    demo = ours["1b"]
    changed, values, everywhere = demo["changed"], demo["values"], demo["everywhere"]
    print(f"1b  a bright 3x3 square moved one pixel right changes {changed['input']} of {values['input']} input "
          f"values, {changed['max pooling']} of {values['max pooling']} outputs of 2x2 max pooling and "
          f"{changed['convolution']} of {values['convolution']} of a 3x3 convolution; over all "
          f"{everywhere['places']} places of the square, the pooled output stays the same in "
          f"{everywhere['pooled_identical']}")
    for key, question in (("1c", "padding for 5x5, stride 1, same size:    "),
                          ("1d", "kernel size for 512x512 -> 504x504:       "),
                          ("1e", "after 2x2 max pooling, stride 2:          "),
                          ("1f", "after a 3x3 convolution, no padding:      ")):
        print(f"{key}  {question} {ours[key]:4d}   reference {REFERENCE[key]:4d}   {mark(key)}")
    print("1g  parameters of the Task 2 network (task2.Task2Model):")
    for (name, description, count), report in zip(ours["1g_layers"], REFERENCE["1g"] + [None] * 10):
        shown = report if report is None else f"{report:,}"
        print(f"      {name:22s} {description:28s} {count:8,d}   reference {shown}")
    total, report_total = sum(ours["1g"]), sum(REFERENCE["1g"])
    print(f"      {'total':51s}{total:8,d}   reference {report_total:,}   {mark('1g')}")
    if mismatches:
        print(f"error: {', '.join(mismatches)} differ from the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
