"""Training over W processes: C ranks share each sequence (context parallelism), W / C groups split the batch.

The W ranks form a 2-D DeviceMesh ("dp", "cp") of shape (W/C, C); rank = dp_rank * C + cp_rank, so the C ranks
sharing a sequence are neighbours (on one node, where the exchange is fastest). Every rank draws the same
global batch from the sampler (so the sampler's position is the same everywhere, and resuming needs one copy
of it); data-parallel group g takes sequences [g * B/dp, (g + 1) * B/dp) of it and cp rank r positions
[r * N/C, (r + 1) * N/C) of each.

Parameters are sharded by FSDP2 over all W ranks (the mesh's two dimensions flattened): the C ranks of a
sequence hold the same parameters, so sharding over them saves memory as sharding over data-parallel groups
does. Each rank's loss is the sum of its targets' losses over the count of targets in the whole global
micro-batch, so the W losses add up to the single-process loss; FSDP's reduce-scatter therefore sums the
gradients over the ranks (it averages by default).
"""

import os

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from .context import SequenceShard
from .model import ByteLlama
from .vocab import PAD


def launched_by_torchrun() -> bool:
    """True when a launcher (torchrun) set this process's rank and the number of processes."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def process_count() -> int:
    """W: the size of the initialized default process group, else the number of processes torchrun started."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    if not launched_by_torchrun():
        raise ValueError("--context-parallel: expected a launch by torchrun (torchrun --nproc-per-node W -m "
                         "lighthouse.train ...), got a single process (RANK and WORLD_SIZE are not set)")
    return int(os.environ["WORLD_SIZE"])


def check_layout(world: int, context: int, model_config, train_config) -> None:
    """ValueError unless C = context splits the W processes, the sequence and the heads, and W / C the batch.

    It depends only on the configuration and W, which every rank has alike, so every rank raises the same
    error before any collective runs (none waits for another).
    """
    if context < 1 or world % context:
        raise ValueError(f"--context-parallel: expected a divisor of the number of processes W = {world}, "
                         f"got {context}")
    data_parallel = world // context
    if train_config.batch_size % data_parallel:
        raise ValueError(f"--batch-size: expected a multiple of the data-parallel size W / C = {data_parallel} "
                         f"(each group takes batch_size / {data_parallel} sequences), got {train_config.batch_size}")
    if context == 1:
        return
    seq_len = model_config.max_seq_len
    if seq_len % context:
        raise ValueError(f"--seq-len: expected a multiple of --context-parallel C = {context} (each rank holds "
                         f"N / C positions of a sequence), got {seq_len}")
    if model_config.n_heads % context:
        raise ValueError(f"n_heads: expected a multiple of --context-parallel C = {context} (each rank runs "
                         f"n_heads / C heads over the whole sequence), got {model_config.n_heads}")
    kv_heads = model_config.n_kv_heads
    if kv_heads % context and context % kv_heads:
        raise ValueError(f"n_kv_heads: expected a multiple or a divisor of --context-parallel C = {context}, "
                         f"got {kv_heads}")


def device_for_rank(device: torch.device) -> torch.device:
    """This process's device: on CUDA the GPU of its local rank (one GPU per process), else the one given."""
    if device.type != "cuda":
        return device
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank() if dist.is_initialized() else 0))
    return torch.device("cuda", local)


class Parallel:
    """The process layout of a run and the collective steps of training on it.

    Joins the default process group (NCCL on CUDA, gloo otherwise) unless it is already initialized;
    check_layout must have passed for these W and C.
    """

    def __init__(self, context: int, device: torch.device):
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    device_id=device if device.type == "cuda" else None)
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.context = context
        self.data_parallel = self.world // context
        self.dp_rank, self.cp_rank = divmod(self.rank, context)
        self.mesh = init_device_mesh(device.type, (self.data_parallel, context), mesh_dim_names=("dp", "cp"))
        # FSDP shards over all W ranks: the mesh's ("dp", "cp") flattened into one dimension.
        self.shard_mesh = init_device_mesh(device.type, (self.world,), mesh_dim_names=("dp_cp",))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, evaluates and writes the run's files."""
        return self.rank == 0

    def describe(self) -> dict:
        """The layout, as summary.json and the checkpoints record it."""
        return {"world": self.world, "context_parallel": self.context, "data_parallel": self.data_parallel}

    def wrap(self, model: ByteLlama) -> None:
        """Shard the parameters (each decoder layer, then the rest) and, with C > 1, the sequences."""
        for layer in model.model.layers:
            fully_shard(layer, mesh=self.shard_mesh)
        fully_shard(model, mesh=self.shard_mesh)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                # A plain sum over the ranks: the losses of the ranks already add up to the batch mean.
                module.set_force_sum_reduction_for_comms(True)
                module.set_gradient_divide_factor(1.0)
        if self.context > 1:
            model.shard_sequence(SequenceShard(self.mesh["cp"].get_group(), self.cp_rank, self.context))

    def shard_batch(self, batch: torch.Tensor):
        """(inputs [B/dp, N/C], targets [B/dp, N/C], count) of this rank from a global batch [B, N + 1]; count is
        the number of scored (non-PAD) targets in the whole batch, the denominator of every rank's loss."""
        rows = batch.shape[0] // self.data_parallel
        length = (batch.shape[1] - 1) // self.context
        mine = batch[self.dp_rank * rows:(self.dp_rank + 1) * rows]
        positions = slice(self.cp_rank * length, (self.cp_rank + 1) * length)
        return mine[:, :-1][:, positions], mine[:, 1:][:, positions], int((batch[:, 1:] != PAD).sum())

    @staticmethod
    def sync_gradients(model: FSDPModule, sync: bool) -> None:
        """Reduce-scatter the gradients in this backward (the last micro-batch of a step) or keep accumulating."""
        model.set_requires_gradient_sync(sync)

    @staticmethod
    def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
        """clip_grad_norm_ over sharded gradients: the norm of the whole gradient, the same on every rank."""
        parameters = [p for p in parameters if p.grad is not None]
        total = torch.nn.utils.get_total_norm([p.grad for p in parameters]).full_tensor()  # a DTensor: partial norms
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
        return total

    @staticmethod
    def total(value: torch.Tensor) -> torch.Tensor:
        """The sum of value over all ranks."""
        dist.all_reduce(value)
        return value

    @staticmethod
    def any_rank(flag: bool, device: torch.device) -> bool:
        """True on every rank when flag is True on any (a decision every rank must take alike)."""
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    @staticmethod
    def barrier() -> None:
        dist.barrier()

    def full_model(self, model: ByteLlama, device: torch.device):
        """A plain (unsharded, single-process) copy of the model on rank 0, None on the others. Collective.

        The copy is built on the meta device, so making it draws nothing from the random generators.
        """
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        with torch.device("meta"):
            copy = ByteLlama(model.config)
        copy.to_empty(device=device)
        copy.load_state_dict(state)
        return copy
