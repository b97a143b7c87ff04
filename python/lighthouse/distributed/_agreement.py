"""Cross-rank agreement on a call's shapes and options, before any large exchange.

A collective with mismatched sizes can hang, or fail on some ranks only. So every rank first all-gathers a
small fixed-size int64 description of its call (kind, rank, sizes and dtype of each tensor argument, one
fingerprint of the other options); every rank then runs the same checks on the same gathered rows and
reaches the same verdict: all ranks raise the same ValueError, or none does. The checks after this one
depend only on what every rank now knows to be equal, so they raise on every rank alike too.
"""

import zlib

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

_MAX_DIMS = 4  # sizes recorded per tensor; the layer's tensors have at most 4 dimensions
_NONE, _TENSOR, _OTHER = 0, 1, 2


def _fingerprint(text):
    return zlib.crc32(text.encode())


def _describe(name, value):
    """The same field names on every rank: [(field, int)] for one argument."""
    is_tensor = isinstance(value, torch.Tensor)
    kind = _NONE if value is None else _TENSOR if is_tensor else _OTHER
    sizes = list(value.shape[:_MAX_DIMS]) if is_tensor else []
    sizes += [-1] * (_MAX_DIMS - len(sizes))
    return (
        [(name, kind), (f"{name}.dim()", value.dim() if is_tensor else -1)]
        + [(f"{name}.shape[{i}]", size) for i, size in enumerate(sizes)]
        + [(f"{name}.dtype", _fingerprint(str(value.dtype)) if is_tensor else 0)]
    )


def _options_text(options):
    return {name: repr(value) for name, value in sorted(options.items())}


def _raise_for_options(group, options):
    """The options differ somewhere: gather them all (only on this error path) and name the first that differs."""
    mine = _options_text(options)
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    for name in sorted(set().union(*everyone)):
        values = [theirs.get(name, "(not given)") for theirs in everyone]
        if any(v != values[0] for v in values):
            raise ValueError(
                f"lighthouse: {name}: expected the same value on every rank of the group, got {values} in rank order"
            )


def _kinds(column):
    names = {_NONE: "None", _TENSOR: "a tensor", _OTHER: "another object"}
    return [names[kind] for kind in column]


def agree(group, world, tensors, options, device):
    """Raises ValueError on every rank unless every rank passed the same shapes, dtypes and options.

    tensors: {name: tensor or None}, compared by kind, rank, sizes and dtype; options: {name: value} compared
    by repr. device: where the group's backend exchanges tensors (the device of q). A differing local
    seq_len (q.shape[1]) means the sequence was not split into W equal shards.
    """
    fields = [field for name, value in tensors.items() for field in _describe(name, value)]
    fields.append(("options", _fingerprint(repr(_options_text(options)))))
    mine = torch.tensor([value for _, value in fields], dtype=torch.int64, device=device)
    rows = funcol.wait_tensor(funcol.all_gather_tensor(mine, 0, group)).view(world, len(fields)).tolist()
    for i, (name, _) in enumerate(fields):
        column = [row[i] for row in rows]
        if all(value == column[0] for value in column):
            continue
        if name == "options":
            _raise_for_options(group, options)
        if name == "q.shape[1]":
            raise ValueError(
                f"lighthouse: q.shape[1]: expected the same local seq_len on every rank (the sequence of N tokens "
                f"split into W = {world} equal shards, so N divisible by W), got {column} in rank order "
                f"(N = {sum(column)})"
            )
        if name in tensors:
            raise ValueError(
                f"lighthouse: {name}: expected a tensor on every rank or None on every rank, got {_kinds(column)} "
                f"in rank order"
            )
        if name.endswith(".dtype"):
            tensor = tensors[name[: -len(".dtype")]]
            raise ValueError(
                f"lighthouse: {name}: expected the same on every rank of the group, got different dtypes "
                f"(this rank: {tensor.dtype})"
            )
        raise ValueError(
            f"lighthouse: {name}: expected the same on every rank of the group, got {column} in rank order"
        )
