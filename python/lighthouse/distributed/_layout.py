"""Which heads each rank runs after the exchange.

Rank r of W runs query heads [r * H/W, (r + 1) * H/W). Its KV heads:
* Hkv % W == 0: KV heads [r * Hkv/W, (r + 1) * Hkv/W), exactly the ones its query heads use (H/W is then
  (H/Hkv) * (Hkv/W), whole query groups);
* W % Hkv == 0 (Hkv < W): the single KV head r // (W/Hkv). Each KV head is copied to the R = W/Hkv ranks that
  run its H/Hkv query heads, H/W of them each (H/W divides H/Hkv because W/Hkv is an integer).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class HeadLayout:
    world: int  # W, ranks in the group
    rank: int  # this rank's index in the group
    heads: int  # H, query heads of the layer
    kv_heads: int  # Hkv, KV heads of the layer
    kv_copies: int  # R: ranks holding each KV head (1 when Hkv % W == 0, W / Hkv when Hkv < W)

    @property
    def kv_head(self):
        """The KV head this rank holds when KV heads are copied (kv_copies > 1)."""
        return self.rank // self.kv_copies


def head_layout(heads, kv_heads, world, rank):
    """The HeadLayout for H = heads, Hkv = kv_heads (H % Hkv == 0, checked by the layer) on W = world ranks;
    ValueError naming q.shape[2] or k.shape[2] when the heads cannot be split."""
    if heads % world:
        raise ValueError(
            f"lighthouse: q.shape[2]: expected heads divisible by the group size W = {world} (each rank runs "
            f"heads / W of them over the whole sequence), got {heads}"
        )
    if kv_heads % world == 0:
        copies = 1
    elif world % kv_heads == 0:
        copies = world // kv_heads
    else:
        raise ValueError(
            f"lighthouse: k.shape[2]: expected kv_heads divisible by the group size W = {world} (split over the "
            f"ranks) or dividing it (each KV head copied to W / kv_heads ranks), got {kv_heads}"
        )
    return HeadLayout(world=world, rank=rank, heads=heads, kv_heads=kv_heads, kv_copies=copies)
