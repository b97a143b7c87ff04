"""Selection scores of a KV head whose query heads are spread over several ranks (Hkv < W).

The query-side score of a KV head is the max over all its query heads (docs/semantics.md); a rank running H/W
of them sees only its part. pool_score's pyramid scores are maxes of base scores, so the max over the ranks
of their pyramid scores is exactly the score of the whole group (max is exact in any order). The key side
takes the same max: ||k|| is equal on every copy, and the dilated scorer's key side depends on q too.
"""

import torch
import torch.distributed._functional_collectives as funcol


def max_over_copies(scores_qk, scores_kq, *, kv_head, kv_heads, group):
    """(scores_qk, scores_kq), each [B, 1, P] float32 for KV head kv_head, maxed over the ranks that hold it.

    One all-reduce(max) over the whole group of a [Hkv, 2, B, P] buffer: this rank's scores in row kv_head,
    -inf elsewhere, so each row ends as the max over the ranks holding that KV head.
    """
    local = torch.stack((scores_qk[:, 0], scores_kq[:, 0]))
    buffer = local.new_full((kv_heads, *local.shape), float("-inf"))
    buffer[kv_head] = local
    reduced = funcol.wait_tensor(funcol.all_reduce(buffer, "max", group))[kv_head]
    return reduced[0].unsqueeze(1), reduced[1].unsqueeze(1)
