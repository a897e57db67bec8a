"""A network as the reference's layer tables show it (layer, type, filters or units, activation), read from the
model repr that a run's config.json keeps."""
from __future__ import annotations

import re

ACTIVATIONS = {"ReLU": "ReLU", "ELU": "ELU", "GELU": "GELU", "LeakyReLU": "LeakyReLU", "Tanh": "Tanh",
               "Sigmoid": "Sigmoid", "SiLU": "SiLU"}
CONVOLUTIONS = {"Conv2d": "Conv2D", "WhiteningConv": "Conv2D"}
NORMALISATIONS = {"BatchNorm2d": "BatchNorm2D", "ShiftOnlyBatchNorm": "BatchNorm2D (shift only)"}


def layer_rows(model_repr: str) -> list[list[str]]:
    """The leaf modules of a model repr, in order: (dotted name, type, arguments)."""
    rows, path = [], []
    for line in str(model_repr).splitlines()[1:]:
        depth = (len(line) - len(line.lstrip())) // 2 - 1
        match = re.match(r"\s*\(([\w.]+)\): (\w+)\((.*)$", line)
        if not match:
            continue
        name, kind, rest = match.groups()
        path = path[:depth] + [name]
        if rest.endswith(")"):  # a leaf: its arguments are on the line
            rows.append([".".join(path), kind, rest[:-1]])
    return rows


def _argument(arguments: str, key: str, position: int | None = None) -> str:
    """One argument of a module repr: `key=...` (a tuple like (5, 5) read as 5x5), else the `position`-th plain one."""
    match = re.search(rf"\b{key}=(\([^)]*\)|[^,]+)", arguments)
    if match:
        value = match.group(1).strip("()").replace(" ", "")
        parts = [p for p in value.split(",") if p]
        return "x".join(parts) if len(set(parts)) > 1 else (parts[0] if parts else "")
    if position is not None:
        plain = [a.strip() for a in arguments.split(",") if "=" not in a]
        return plain[position] if len(plain) > position else ""
    return ""


def _square(size: str) -> str:
    return size if "x" in size else f"{size}x{size}"


def reference_form(model_repr: str, compact: bool = False) -> list[list[str]]:
    """[layer, type, filters or units, activation] rows as the reference's tables: each convolution and fully
    connected layer numbered, with the activation that follows it; batch normalisation and pooling rows under
    the number of the layer they follow; the last layer's softmax is the loss's. `compact`: one row per numbered
    layer, its pooling and normalisation named in its type."""
    rows, number, last_weighted = [], 0, None
    for _, kind, arguments in layer_rows(model_repr):
        if kind in CONVOLUTIONS:
            number += 1
            text = f"Conv2D {_square(_argument(arguments, 'kernel_size'))}"
            padding, stride = _argument(arguments, "padding"), _argument(arguments, "stride")
            text += f", pad {padding}" if padding and padding != "0" else ""
            text += f", stride {stride}" if stride and stride != "1" else ""
            text += " (frozen whitening filters)" if kind == "WhiteningConv" else ""
            rows.append([str(number), text, _argument(arguments, "out_channels", 1), "-"])
            last_weighted = rows[-1]
        elif kind == "Linear":
            number += 1
            rows.append([str(number), "Fully-Connected", _argument(arguments, "out_features"), "-"])
            last_weighted = rows[-1]
        elif kind in ACTIVATIONS and last_weighted is not None and last_weighted[3] == "-":
            last_weighted[3] = ACTIVATIONS[kind]
        elif kind in NORMALISATIONS:
            rows.append([str(number), NORMALISATIONS[kind], "-", "-"])
        elif kind == "MaxPool2d":
            rows.append([str(number), f"MaxPool2D {_square(_argument(arguments, 'kernel_size'))}", "-", "-"])
        elif kind == "Flatten":
            rows.append(["", "Flatten", "", ""])
        else:
            rows.append([str(number), kind, "-", ACTIVATIONS.get(kind, "-")])
    if last_weighted is not None and last_weighted[1] == "Fully-Connected" and last_weighted[3] == "-":
        last_weighted[3] = "Softmax (in the loss)"
    if not compact:
        return rows
    merged = []
    for row in rows:
        if merged and row[0] == merged[-1][0] and row[0] and row[2] == "-":
            merged[-1][1] += f" + {row[1]}"
        elif merged and not row[0] and not merged[-1][0]:
            merged[-1][1] += f" + {row[1]}"
        else:
            merged.append(list(row))
    return merged
