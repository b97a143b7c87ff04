"""Kernel families of the training-step profile (lighthouse/train/kernels.py): names as the CUDA profiler
reports them, and the per-step sums. No GPU needed."""

from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from lighthouse.train import kernels

NAMES = {
    "void lighthouse::cuda::(anonymous namespace)::scatter_tiled_kernel<lighthouse::bf16_t, 8>(...)": "lighthouse",
    "void lighthouse::cuda::(anonymous namespace)::select_tile_kernel(lighthouse::SelectParams)": "lighthouse",
    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>(Flash_fwd_params)":
        "attention",
    "void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>(Flash_bwd_params)": "attention",
    "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x128x128_4x1x1_kernel0_0": "attention",
    "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)": "attention",
    "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT": "gemm",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off": "gemm",
    "void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>(...)": "gemm",
    "triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_0": "triton",
    "triton_poi_fused__scaled_dot_product_flash_attention_transpose_3": "triton",
    "Memset (Device)": "copy",
    "Memcpy DtoD (Device -> Device)": "copy",
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, ...>(...)": "aten",
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, ...> >(...)": "aten",
    "some_vendor_kernel": "other",
}


@pytest.mark.parametrize("name, expected", NAMES.items())
def test_a_kernel_name_decides_its_family(name, expected):
    assert kernels.family(name) == expected


def test_summarize_sums_per_step_and_shares_the_busy_time():
    times = [("triton_poi_fused_add_0", 300.0), ("nvjet_tst_a", 500.0), ("nvjet_tst_a", 700.0),
             ("void pytorch_flash::flash_fwd_kernel<x>(p)", 2500.0), ("Memset (Device)", 0.0)]
    summary = kernels.summarize(times, steps=2, wall_ms=2.5)
    assert summary["busy_ms"] == pytest.approx(2.0)
    assert summary["families"]["attention"] == {"ms": pytest.approx(1.25), "share": pytest.approx(0.625)}
    assert summary["families"]["gemm"] == {"ms": pytest.approx(0.6), "share": pytest.approx(0.3)}
    assert list(summary["families"])[:3] == ["attention", "gemm", "triton"]
    top = summary["top"][1]
    assert top == {"name": "nvjet_tst_a", "ms": pytest.approx(0.6), "calls": 1.0, "family": "gemm"}
    assert summary["wall_ms"] == 2.5 and summary["steps"] == 2


def test_summarize_keeps_the_largest_kernels_only():
    times = [(f"k{i}", float(i + 1)) for i in range(kernels.TOP_KERNELS + 5)]
    top = kernels.summarize(times, steps=1, wall_ms=1.0)["top"]
    assert [k["name"] for k in top] == [f"k{i}" for i in range(kernels.TOP_KERNELS + 4, 4, -1)]


def test_summarize_refuses_no_steps():
    with pytest.raises(ValueError, match="expected steps >= 1, got 0"):
        kernels.summarize([], steps=0, wall_ms=0.0)


def test_markdown_tables_each_mode_and_escapes_pipes():
    run = kernels.summarize([("nvjet_a|b", 1000.0), ("void lighthouse::cuda::gather_kernel<x>()", 1000.0)], 1, 3.0)
    lines = kernels.markdown({"dense": {}, "lighthouse": {"kernels": run}})
    text = "\n".join(lines)
    assert "| lighthouse ms | lighthouse share |" in text and "dense ms" not in text
    assert "| gemm | 1.00 | 50.0% |" in text and "| **device busy** | **2.00** | 100% |" in text
    assert "`nvjet_a\\|b`" in text
    assert kernels.markdown({"dense": {}}) == []


def test_stage_kernels_are_listed_with_short_names_by_time():
    tiled = ("void lighthouse::cuda::(anonymous namespace)::gather_backward_tiled_kernel<lighthouse::bf16_t, 8, "
             "(lighthouse::cuda::detail::RopeMode)1>(lighthouse::GatherBackwardParams, long, int, "
             "lighthouse::cuda::detail::ItemLayout, int)")
    select = "void lighthouse::cuda::(anonymous namespace)::select_kernel(lighthouse::SelectParams)"
    times = [(select, 100.0), (tiled, 300.0), ("nvjet_tst_a", 900.0), (tiled, 500.0)]
    stages = kernels.summarize(times, steps=2, wall_ms=1.0)["stages"]
    assert stages == [
        {"name": "gather_backward_tiled_kernel<lighthouse::bf16_t, 8, (lighthouse::cuda::detail::RopeMode)1>",
         "ms": pytest.approx(0.4), "calls": 1.0},
        {"name": "select_kernel", "ms": pytest.approx(0.05), "calls": 0.5},
    ]
    lines = "\n".join(kernels.markdown({"lighthouse": {"kernels": kernels.summarize(times, 2, 1.0)}}))
    assert "Lighthouse stage kernels, lighthouse:" in lines and "| `select_kernel` | 0.050 | 0 |" in lines
    assert kernels.summarize([("nvjet_tst_a", 1.0)], 1, 1.0)["stages"] == []


def test_idle_is_what_no_activity_covers_with_the_longest_intervals_named():
    # a 0-10, b 5-20 (overlapping: one covered stretch), idle 20-26, c 26-30, copy 30-31 (touching: no gap),
    # idle 31-32, d 32-40; listed out of order as the profiler may.
    spans = [(26.0, 30.0, "c"), (0.0, 10.0, "a"), (32.0, 40.0, "d"), (5.0, 20.0, "b"), (30.0, 31.0, "copy")]
    result = kernels.idle(spans, steps=2)
    assert result["ms"] == pytest.approx(0.0035) and result["intervals"] == 1.0
    assert result["longest"] == [{"ms": pytest.approx(0.006), "after": "b", "before": "c"},
                                 {"ms": pytest.approx(0.001), "after": "copy", "before": "d"}]


def test_idle_counts_a_kernel_inside_a_longer_one_as_covered():
    # e runs inside a; the gap after a is measured from a's end, and named after a, not after e.
    result = kernels.idle([(0.0, 100.0, "a"), (10.0, 20.0, "e"), (150.0, 160.0, "f")], steps=1)
    assert result["ms"] == pytest.approx(0.05)
    assert result["longest"] == [{"ms": pytest.approx(0.05), "after": "a", "before": "f"}]


def test_idle_keeps_the_longest_intervals_only_and_refuses_no_steps():
    spans = [(10.0 * i + i * i, 10.0 * i + i * i + 10.0, f"k{i}") for i in range(kernels.TOP_GAPS + 3)]
    longest = kernels.idle(spans, steps=1)["longest"]
    assert [g["before"] for g in longest] == [f"k{i}" for i in range(kernels.TOP_GAPS + 2, 2, -1)]
    assert kernels.idle([], steps=1) == {"ms": 0.0, "intervals": 0.0, "longest": []}
    with pytest.raises(ValueError, match="expected steps >= 1, got 0"):
        kernels.idle([], steps=0)


def test_markdown_lists_idle_time_and_the_longest_intervals():
    run = {**kernels.summarize([("nvjet_a", 1000.0)], 1, 3.0),
           "idle": kernels.idle([(0.0, 500.0, "Memcpy HtoD"), (2000.0, 2500.0, "triton_x|y")], steps=1)}
    text = "\n".join(kernels.markdown({"lighthouse": {"kernels": run}}))
    assert "| device idle between activities | 1.50 | 1 intervals |" in text
    assert "Longest idle intervals of the device, lighthouse" in text
    assert "| 1.500 | `Memcpy HtoD` | `triton_x\\|y` |" in text
    no_idle = "\n".join(kernels.markdown({"lighthouse": {"kernels": kernels.summarize([("nvjet_a", 1.0)], 1, 1.0)}}))
    assert "device idle" not in no_idle and "Longest idle" not in no_idle


def event(name, device_type, start, end):
    """A stand-in for one torch.profiler event: what device_spans reads of it."""
    return SimpleNamespace(name=name, device_type=device_type, time_range=SimpleNamespace(start=start, end=end))


def test_device_activities_are_read_from_the_profiler_events_only():
    prof = SimpleNamespace(events=lambda: [event("aten::mm", DeviceType.CPU, 0.0, 50.0),
                                           event("nvjet_a", DeviceType.CUDA, 10.0, 40.0),
                                           event("Memset (Device)", DeviceType.CUDA, 45.0, 47.5)])
    assert kernels.device_spans(prof) == [(10.0, 40.0, "nvjet_a"), (45.0, 47.5, "Memset (Device)")]
    assert kernels.kernel_times(prof) == [("nvjet_a", 30.0), ("Memset (Device)", 2.5)]


def test_a_profile_is_summarized_from_one_read_of_its_events():
    reads = []

    def events():
        reads.append(1)
        return [event("aten::mm", DeviceType.CPU, 0.0, 50.0), event("nvjet_a", DeviceType.CUDA, 10.0, 40.0),
                event("triton_x", DeviceType.CUDA, 1510.0, 1520.0)]

    result = kernels.summarize_profile(SimpleNamespace(events=events), 2, 9.0)
    assert len(reads) == 1
    spans = [(10.0, 40.0, "nvjet_a"), (1510.0, 1520.0, "triton_x")]
    assert result == {**kernels.summarize([("nvjet_a", 30.0), ("triton_x", 10.0)], 2, 9.0),
                      "idle": kernels.idle(spans, 2)}
    assert result["busy_ms"] == 0.02 and result["idle"]["ms"] == 0.735
