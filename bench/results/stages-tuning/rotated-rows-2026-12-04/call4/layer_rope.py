# Layer forward+backward with rope tables at one size: peak extra memory and median time (device events).
import json, sys, torch
import lighthouse
N = int(sys.argv[1]); H = int(sys.argv[2]); HKV = int(sys.argv[3]); label = sys.argv[4]
D, reps = 128, 10
dev = "cuda"
g = torch.Generator(device=dev).manual_seed(0)
mk = lambda h: torch.randn(1, N, h, D, device=dev, dtype=torch.bfloat16, generator=g)
q, k, v = mk(H).requires_grad_(), mk(HKV).requires_grad_(), mk(HKV).requires_grad_()
pos = torch.arange(N, device=dev, dtype=torch.float32)[:, None]
inv = 10000.0 ** (-torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D)
ang = torch.cat([pos * inv, pos * inv], dim=1)
rope = (ang.cos(), ang.sin())
grad = torch.randn(1, N, H, D, device=dev, dtype=torch.bfloat16, generator=g)
def step():
    out = lighthouse.lighthouse_attention(q, k, v, levels=3, pooling=4, topk=2048, rope=rope)
    out.backward(grad)
    q.grad = k.grad = v.grad = None
for _ in range(3): step()
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
step(); torch.cuda.synchronize()
peak = torch.cuda.max_memory_allocated() - before
times = []
for _ in range(reps):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(); step(); b.record(); torch.cuda.synchronize(); times.append(a.elapsed_time(b))
times.sort()
print(json.dumps({"build": label, "seq_len": N, "heads": H, "kv_heads": HKV, "peak_extra_gib": peak / 2**30,
                  "fwd_bwd_ms_median": times[len(times) // 2], "fwd_bwd_ms_min": times[0], "fwd_bwd_ms_max": times[-1]}))
