"""Runs a preset: for every point, the pre-timing check, the Lighthouse layer
(forward, forward+backward), its stages, and dense SDPA per backend, with skip
decisions made from estimates before anything is allocated. Produces one
JSON-ready record per point (layout in report.py's module docstring)."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from lighthouse.bench import anchors
from lighthouse.bench.calibrate import calibrate
from lighthouse.bench.check import check_point
from lighthouse.bench.estimate import (
    Plan, Throughput, dense_memory, dense_seconds, input_bytes, lighthouse_memory, lighthouse_seconds, memory_skip,
    output_bytes, plan_repeats,
)
from lighthouse.bench.fidelity import measure_fidelity
from lighthouse.bench.methods import (
    DENSE_BACKENDS, TORCH_DTYPES, Measurable, dense_measurable, lighthouse_measurable, make_inputs,
)
from lighthouse.bench.points import Point, config_problem, kept_entries, pyramid_len
from lighthouse.bench.presets import Preset
from lighthouse.bench.progress import Progress
from lighthouse.bench.stages import BACKWARD_STAGES, FORWARD_STAGES, STAGES, build_state, stage_measurables
from lighthouse.bench.timing import cache_bytes, input_sets, measure, summarize, synchronize

MODES = ("fwd", "fwd_bwd")


@dataclass(frozen=True)
class SweepSettings:
    preset: Preset
    device: torch.device
    dense_methods: tuple[str, ...]
    run_check: bool = True
    run_stages: bool = True
    seed: int = 0


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def failed(error: BaseException) -> dict:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return {"status": "failed", "reason": f"failed: {type(error).__name__}: {message}"[:500]}


def available_memory(device: torch.device) -> int:
    release(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _rate(amount: float | None, median_ms: float, scale: float) -> float | None:
    return amount / (median_ms * 1e-3) / scale if amount is not None and median_ms > 0 else None


class Sweep:
    def __init__(self, settings: SweepSettings, progress: Progress, on_point: Callable[[list[dict]], None]):
        self.settings = settings
        self.preset = settings.preset
        self.device = settings.device
        self.progress = progress
        self.on_point = on_point
        self.deadline = time.monotonic() + self.preset.time_budget_s
        self.speeds: dict[str, Throughput] = {}
        self.dense_cache: dict[tuple, dict] = {}

    @staticmethod
    def tasks_per_point(settings: SweepSettings) -> int:
        return int(settings.run_check) + len(MODES) + int(settings.run_stages) + len(MODES) * len(settings.dense_methods)

    def run(self) -> list[dict]:
        records = []
        for point in self.preset.points:
            records.append(self.point(point))
            self.on_point(records)
        return records

    # --- one point -----------------------------------------------------------------------------------------

    def point(self, point: Point) -> dict:
        problem = config_problem(point.config, point.seq_len)
        kept = kept_entries(point.config, point.seq_len) if problem is None else None
        record = {
            "point": point.to_json(),
            "series": point.series(),
            "kept": kept,
            "kept_ratio": kept / point.seq_len if kept else None,
            "pyramid_len": pyramid_len(point.config, point.seq_len),
            "check": None,
            "fidelity": None,
            "methods": {},
            "stages": {},
            "anchor": self._anchor(point, kept),
        }
        label = f"N={point.seq_len} {point.series()}"
        self._lighthouse(point, problem, record, label)
        for method in self.settings.dense_methods:
            record["methods"][method] = self._dense(point, method, label)
        self._derive(record)
        for name, modes in record["methods"].items():
            for mode, result in modes.items():
                if result["status"] != "ok":
                    self.progress.note(f"{label} {name} {mode}: {result['reason']}")
        if record["check"] and record["check"]["status"] in ("failed", "error"):
            self.progress.note(f"{label} CHECK {record['check']['status'].upper()}: {record['check']['reason']}")
        return record

    def _anchor(self, point: Point, kept: int | None) -> dict | None:
        if kept is None or anchors.matching_row(point, kept) is None:
            return None
        return {f"{method}_{mode}": anchors.anchor_ms(point, kept, method, mode)
                for method, mode in anchors.METHOD_COLUMNS}

    def _lighthouse(self, point: Point, problem: str | None, record: dict, label: str) -> None:
        settings = self.settings
        if problem is not None:
            reason = f"skipped: {problem}"
            record["check"] = skipped(reason) if settings.run_check else None
            record["fidelity"] = skipped(reason) if settings.run_check else None
            record["methods"]["lighthouse"] = {mode: skipped(reason) for mode in MODES}
            record["stages"] = {stage: skipped(reason) for stage in STAGES} if settings.run_stages else {}
            for _ in range(self.tasks_per_point(settings) - len(MODES) * len(settings.dense_methods)):
                self.progress.step(f"{label} lighthouse skipped")
            return

        math_backend = self.device.type == "cpu"
        layer_estimate = lighthouse_seconds(point, True, math_backend, self._speed(point))
        budget = self._plan(point, layer_estimate)
        if settings.run_check:
            if budget.skip:
                record["check"] = skipped(f"{budget.skip} (the layer itself)")
                record["fidelity"] = skipped(f"{budget.skip} (the layer itself)")
            else:
                record["check"] = self._check(point)
                record["fidelity"] = self._fidelity(point)
            self.progress.step(f"{label} check")

        methods = {}
        for mode in MODES:
            backward = mode == "fwd_bwd"
            methods[mode] = self._measure(
                point,
                lambda backward=backward: lighthouse_measurable(point, self._inputs(point, False, backward), backward),
                estimate_s=lighthouse_seconds(point, backward, math_backend, self._speed(point)),
                memory=lighthouse_memory(point, backward, math_backend),
            )
            self.progress.step(f"{label} lighthouse {mode}")
        record["methods"]["lighthouse"] = methods

        if settings.run_stages:
            if methods["fwd_bwd"]["status"] != "ok":
                reason = f"skipped: the layer's forward+backward did not run ({methods['fwd_bwd']['reason']})"
                record["stages"] = {stage: skipped(reason) for stage in STAGES}
            else:
                record["stages"] = self._stages(point, methods["fwd_bwd"]["ms"]["max"] * 1e-3)
            self.progress.step(f"{label} stages")

    def _check(self, point: Point) -> dict:
        try:
            return check_point(point, self.device, self.settings.seed + 7)
        except Exception as error:  # a crash of the layer is a finding to report, not a reason to stop
            return {"status": "error", "reason": failed(error)["reason"].replace("failed:", "error:", 1)}
        finally:
            release(self.device)

    def _fidelity(self, point: Point) -> dict:
        try:
            return measure_fidelity(point, self.device, self.settings.seed + 11)
        except Exception as error:  # reported in the column, like a failed measurement
            return failed(error)
        finally:
            release(self.device)

    def _stages(self, point: Point, stage_estimate_s: float) -> dict:
        try:
            states = [build_state(point, x) for x in self._inputs(point, False, False)]
            measurables = stage_measurables(point, states)
        except Exception as error:
            result = failed(error)
            release(self.device)
            return {stage: dict(result) for stage in STAGES}
        # The states stay alive until this returns; the next measurement's memory probe releases them.
        return {stage: self._measure(point, lambda stage=stage: measurables[stage], stage_estimate_s, memory=0,
                                     track_memory=False) for stage in STAGES}

    def _dense(self, point: Point, method: str, label: str) -> dict:
        results = {}
        for mode in MODES:
            if point.seq_len > self.preset.dense_max_seq_len:
                results[mode] = skipped(f"skipped: the preset runs dense SDPA only up to "
                                        f"N={self.preset.dense_max_seq_len}")
            elif (point.dense_key(), method, mode) in self.dense_cache:
                results[mode] = dict(self.dense_cache[(point.dense_key(), method, mode)])
            else:
                backward, math_backend = mode == "fwd_bwd", method == "sdpa_math"
                results[mode] = self._measure(
                    point,
                    lambda backward=backward: dense_measurable(
                        point, self._inputs(point, True, backward), DENSE_BACKENDS[method], backward),
                    estimate_s=dense_seconds(point, backward, math_backend, self._speed(point)),
                    memory=dense_memory(point, backward, math_backend),
                )
                self.dense_cache[(point.dense_key(), method, mode)] = results[mode]
            self.progress.step(f"{label} {method} {mode}")
        return results

    # --- measurement ---------------------------------------------------------------------------------------

    def _speed(self, point: Point) -> Throughput:
        if point.dtype not in self.speeds:
            self.speeds[point.dtype] = calibrate(self.device, TORCH_DTYPES[point.dtype])
        return self.speeds[point.dtype]

    def _plan(self, point: Point, seconds_per_call: float, calls_done: int = 0) -> Plan:
        warmup, repeats = self.preset.counts(point.seq_len)
        return plan_repeats(
            seconds_per_call,
            warmup=max(warmup - calls_done, 0),
            repeats=repeats,
            min_repeats=self.preset.min_repeats,
            budget_s=self.preset.measure_budget_s,
            remaining_s=self.deadline - time.monotonic(),
        )

    def _inputs(self, point: Point, heads_first: bool, grad: bool) -> list:
        """Input sets to rotate through: several when one set would stay in cache."""
        per_set = input_bytes(point) + output_bytes(point)
        count = input_sets(per_set, cache_bytes(self.device))
        return [make_inputs(point, self.device, self.settings.seed + i, heads_first=heads_first, grad=grad)
                for i in range(count)]

    def _measure(self, point: Point, factory: Callable[[], Measurable], estimate_s: float, memory: int,
                 track_memory: bool = True) -> dict:
        plan = self._plan(point, estimate_s)
        if plan.skip:
            return skipped(f"{plan.skip}, estimated from FLOPs and bytes")
        too_big = memory_skip(memory, available_memory(self.device)) if memory else None
        if too_big:
            return skipped(too_big)
        try:
            measurable = factory()
            with measurable.context():
                first_s, peak = self._first_call(measurable, track_memory)
                plan = self._plan(point, first_s, calls_done=1)
                if plan.skip:
                    return skipped(f"{plan.skip}, from a first call of {first_s:.2f} s")
                warmup, _ = self.preset.counts(point.seq_len)
                samples = measure(measurable.run, device=self.device, warmup=max(warmup - 1, 0),
                                  repeats=plan.repeats, prepare=measurable.prepare)
        except Exception as error:  # e.g. out of memory, a backend refusing the shape: reported per cell
            return failed(error)
        finally:
            release(self.device)
        stats = summarize(samples)
        return {
            "status": "ok",
            "reason": None,
            "ms": stats,
            "peak_memory_bytes": peak,
            "flops": measurable.flops,
            "tflops": _rate(measurable.flops, stats["median"], 1e12),
            "bytes": measurable.bytes,
            "gbps": _rate(measurable.bytes, stats["median"], 1e9),
        }

    def _first_call(self, measurable: Measurable, track_memory: bool) -> tuple[float, int | None]:
        """Times one synchronized call (the first warm-up) and, on CUDA, its peak
        allocation above what was allocated before it."""
        argument = measurable.prepare(0)
        cuda = self.device.type == "cuda" and track_memory
        synchronize(self.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        start = time.perf_counter()
        measurable.run(argument)
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(self.device) - base if cuda else None
        return elapsed, peak

    # --- derived numbers -----------------------------------------------------------------------------------

    def _derive(self, record: dict) -> None:
        lighthouse = record["methods"].get("lighthouse", {})
        record["speedup"] = {}
        for method in self.settings.dense_methods:
            record["speedup"][method] = {}
            for mode in MODES:
                ours, dense = lighthouse.get(mode), record["methods"][method][mode]
                ok = ours and ours["status"] == "ok" and dense["status"] == "ok"
                record["speedup"][method][mode] = dense["ms"]["median"] / ours["ms"]["median"] if ok else None
        stages = record["stages"]
        record["attention"] = {
            "tflops_fwd": stages.get("attention", {}).get("tflops"),
            "tflops_bwd": stages.get("attention_backward", {}).get("tflops"),
        }
        record["rest"] = {"gbps_fwd": self._rest_rate(stages, FORWARD_STAGES),
                          "gbps_bwd": self._rest_rate(stages, BACKWARD_STAGES)}

    @staticmethod
    def _rest_rate(stages: dict, names: tuple[str, ...]) -> float | None:
        """GB/s of the memory-bound stages together: their bytes over their summed median times."""
        parts = [stages.get(name) for name in names if not name.startswith("attention")]
        if not parts or any(part is None or part["status"] != "ok" for part in parts):
            return None
        return _rate(sum(p["bytes"] for p in parts), sum(p["ms"]["median"] for p in parts), 1e9)
