"""Context parallelism for the Lighthouse layer (Ulysses-style head exchange over torch.distributed).

Each rank of a process group holds a contiguous shard of the sequence: rank r of W holds positions
[r * N/W, (r + 1) * N/W). Lighthouse pools and selects over the whole sequence, so an all-to-all trades the
sequence shards for head shards (every rank gets all N positions of H/W heads), each rank runs the ordinary
layer on its heads, and a second all-to-all returns each rank's sequence shard of the output. Backward runs
the same exchanges in reverse. docs/context-parallel.md gives the costs.

Import it explicitly (`from lighthouse.distributed import context_parallel_attention`); importing
`lighthouse` does not import it.
"""

from .attention import context_parallel_attention, context_parallel_dense_attention

__all__ = ["context_parallel_attention", "context_parallel_dense_attention"]
