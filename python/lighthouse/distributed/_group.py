"""The process group a context-parallel call runs on: this process's rank in it and its size."""

import torch.distributed as dist


def resolve(group):
    """(group, rank, world) for group (None: the default group); ValueError naming group when unusable."""
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "lighthouse: group: expected an initialized torch.distributed process group "
            "(call torch.distributed.init_process_group first), got none"
        )
    if group is None:
        group = dist.group.WORLD
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(
            f"lighthouse: group: expected a process group this process belongs to, got one whose ranks "
            f"{dist.get_process_group_ranks(group)} do not include this process (global rank {dist.get_rank()})"
        )
    return group, rank, dist.get_world_size(group)
