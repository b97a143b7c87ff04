"""The LM head and the cross-entropy together, a chunk of positions at a time.

At 64K-128K positions a step's full logits in fp32 (and their gradient) take hundreds of MB for a vocabulary
of 264, only to be reduced to one number. ``chunked_cross_entropy`` computes the logits of ``chunk`` positions
at a time, keeps only each position's log-sum-exp, and in the backward recomputes each chunk's logits to
write the gradients of the hidden states and of the head weight. No more than one chunk of logits exists at
any time, in the forward or in the backward.

The logits are computed as the plain head would compute them (under autocast: in its dtype, bf16) and
reduced in fp32 (in fp64 for fp64 inputs), as ``F.cross_entropy(logits.float(), ...)`` does; the sum over
the chunks differs from F.cross_entropy's one reduction by rounding only (tests/python/test_train_loss.py:
equal to 1e-12 relative in fp64, to 1e-5 in fp32).
"""

import torch
import torch.nn.functional as F

# Positions per chunk: 8192 x 264 fp32 logits are 8.7 MB, small next to the activations of a 64K step and
# large enough that the chunk's matmuls keep a GPU busy.
CHUNK = 8192


def _reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for the half types and fp32 itself, fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, chunk: int):
        total = None
        lse_parts = []
        for start in range(0, hidden.shape[0], chunk):
            logits = F.linear(hidden[start:start + chunk], weight)
            ctx.logits_dtype = logits.dtype
            logits = logits.to(_reduction_dtype(logits.dtype))
            part = targets[start:start + chunk]
            keep = part != ignore_index
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, torch.where(keep, part, 0).unsqueeze(1)).squeeze(1)
            chunk_sum = torch.where(keep, lse - picked, 0.0).sum()
            total = chunk_sum if total is None else total + chunk_sum
            lse_parts.append(lse)
        ctx.ignore_index, ctx.chunk = ignore_index, chunk
        ctx.save_for_backward(hidden, weight, targets, torch.cat(lse_parts))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        hidden, weight, targets, lse = ctx.saved_tensors
        dtype = ctx.logits_dtype
        # Recompute the logits exactly as the forward did (the forward's autocast is not active here).
        with torch.autocast(hidden.device.type, enabled=False):
            head = weight.to(dtype)
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros(weight.shape, dtype=_reduction_dtype(dtype), device=weight.device)
            for start in range(0, hidden.shape[0], ctx.chunk):
                rows = hidden[start:start + ctx.chunk].to(dtype)
                logits = F.linear(rows, head).to(_reduction_dtype(dtype))
                part = targets[start:start + ctx.chunk]
                keep = part != ctx.ignore_index
                # d(lse - logit[target]) / d logits = softmax - one_hot(target), zero on ignored rows.
                grad = torch.exp(logits - lse[start:start + ctx.chunk].unsqueeze(1))
                grad = grad.scatter_add(1, torch.where(keep, part, 0).unsqueeze(1),
                                        torch.full_like(grad[:, :1], -1.0))
                grad = (grad * torch.where(keep, grad_total, 0.0).unsqueeze(1)).to(dtype)
                grad_hidden[start:start + ctx.chunk] = (grad @ head).to(hidden.dtype)
                grad_weight += (grad.t() @ rows).to(grad_weight.dtype)
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                          chunk: int = CHUNK) -> torch.Tensor:
    """The summed cross-entropy of ``hidden @ weight.T`` [T, V] against targets [T], ignoring ``ignore_index``.

    hidden [T, d] and weight [V, d] as the LM head takes them; returns a scalar (fp32, fp64 for fp64 inputs).
    Divide by the count of scored targets for F.cross_entropy's mean (its reduction="mean" with ignore_index).
    """
    return _ChunkedCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk)
