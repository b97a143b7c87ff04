"""The model's attention on one rank's shard of a sequence split over a context-parallel group.

Each of the C ranks of the group holds the contiguous positions [r * N/C, (r + 1) * N/C) of every sequence
of its batch. Everything but attention works on those positions alone; attention calls
lighthouse.distributed, which exchanges sequence shards for head shards over the group. The model's
rotary tables cover the whole sequence (the same tables, bit for bit, as a single process computes), so a
shard rotates its q and k with its own rows: the global positions, not 0 .. N/C - 1.
"""

import dataclasses

from .model import LIGHTHOUSE, apply_rope, layer_options


@dataclasses.dataclass(frozen=True)
class SequenceShard:
    group: object  # the context-parallel process group of C ranks
    rank: int  # r: this rank's index in the group, its positions [r * N/C, (r + 1) * N/C)
    size: int  # C: ranks sharing each sequence

    def local_tables(self, cos, sin, length):
        """This rank's rows of the whole-sequence tables [N, D], for its `length` = N/C positions."""
        start = self.rank * length
        return cos.narrow(0, start, length), sin.narrow(0, start, length)

    def attention(self, q, k, v, mode, settings, cos, sin):
        """The attention of a layer in `mode` (Lighthouse, else dense) on this rank's un-rotated q [B, N/C, H, D],
        k and v [B, N/C, Hkv, D]; cos and sin are the tables over all N positions. Returns this rank's
        [B, N/C, H, D] output.

        The layer's shapes are fixed by the model and were checked for the group when the run was set up
        (parallel.check_layout), so the per-call cross-rank agreement of lighthouse.distributed is skipped
        (check=False): it would add an all-gather and a host synchronisation to every layer.
        """
        # Imported here, as model.sparse_attention imports lighthouse: importing the training package never
        # loads the compiled extension.
        from lighthouse.distributed import context_parallel_attention, context_parallel_dense_attention

        local_cos, local_sin = self.local_tables(cos, sin, q.shape[1])
        if mode == LIGHTHOUSE:
            if settings.rope == "before":
                q, k = apply_rope(q, local_cos, local_sin), apply_rope(k, local_cos, local_sin)
            return context_parallel_attention(q, k, v, group=self.group, check=False,
                                              **layer_options(settings, cos, sin))
        q, k = apply_rope(q, local_cos, local_sin), apply_rope(k, local_cos, local_sin)
        return context_parallel_dense_attention(q, k, v, group=self.group, check=False)
