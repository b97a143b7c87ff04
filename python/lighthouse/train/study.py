"""Paired study of Lighthouse + dense resumption against dense: step budgets, runs, intervals.

Every arm of a seed starts from the same weights and reads the same batches (the seed fixes both), so
the difference of two arms' final validation losses is a paired measurement; over seeds it gets a
Student-t interval. Two budgets are compared:

* **equal tokens**: the Lighthouse arm takes the dense arm's step count;
* **equal GPU time**: the Lighthouse arm takes as many steps as fit into the dense arm's training time,
  with the same wsd split (the last ``decay_fraction`` of its steps, dense). The time of a step in each
  mode is measured once, in isolation, by a calibration (two short runs, one per mode, before any arm),
  and every seed uses the resulting step counts. The budget therefore holds whether or not the arms run
  one at a time, and the seeds' arms are paired step for step. Evaluation time is no part of it.

``python -m lighthouse.train.study run`` calibrates (once; ``plan.json``), then trains every seed's arms
(dense, Lighthouse at equal time, Lighthouse at equal tokens), several seeds at once if asked, until a
deadline; called again it resumes where it stopped (each arm resumes from its checkpoint, finished arms
are skipped). ``... study lever NAME -- OPTIONS`` then trains a lever: the Lighthouse arm with further
lighthouse-train options (or another switch point, ``--switch``) at the dense arm's GPU time, its own stage-1
step time calibrated. ``... study summarize`` writes ``summary.json`` with the paired comparisons and the
levers, and the plots.
"""

import argparse
import concurrent.futures
import json
import math
import pathlib
import statistics
import subprocess
import sys
import time

LN2 = math.log(2)
ARMS = ("dense", "equal-time", "equal-tokens")  # the arms of a plan, in the order a seed trains them
CALIBRATION_STEPS = 12  # steps timed per mode by default; the first CALIBRATION_WARMUP are left out
CALIBRATION_WARMUP = 3
# Seconds kept back from a deadline for what follows an arm's last step: export, retrieval, passkey.
FINISH_RESERVE_S = 60.0
# An arm starts only when the time left covers this multiple of its planned training time (its
# evaluations and start-up come on top), so a job cut off at its deadline leaves no half-trained arm.
START_MARGIN = 1.5
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom (beyond 30: the Cornish-Fisher
    expansion to first order, within 0.003 of the exact value)."""
    if df < 1:
        raise ValueError(f"degrees of freedom: expected at least 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df)


def paired_interval(deltas: list) -> dict:
    """Mean of the per-seed differences and its 95% t-interval (None for fewer than two seeds)."""
    if not deltas:
        raise ValueError("paired_interval: no differences given")
    mean = statistics.fmean(deltas)
    if len(deltas) < 2:
        return {"delta_mean": mean, "ci95_low": None, "ci95_high": None}
    half = t975(len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))
    return {"delta_mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def decay_split(steps: int, decay_fraction: float) -> tuple:
    """(Lighthouse steps, dense steps) of a two-stage arm whose switch is at the start of the wsd decay."""
    dense = round(decay_fraction * steps)
    return steps - dense, dense


def stage_split(steps: int, decay_fraction: float, switch: float = None) -> tuple:
    """(Lighthouse steps, dense steps): the switch at the decay's start, or after the fraction ``switch`` of the
    steps (rounded as lighthouse-train rounds a fractional --lighthouse-steps)."""
    if switch is None:
        return decay_split(steps, decay_fraction)
    lighthouse = int(round(switch * steps))
    return lighthouse, steps - lighthouse


def arm_seconds(steps: int, decay_fraction: float, step_s: dict, switch: float = None) -> float:
    lighthouse, dense = stage_split(steps, decay_fraction, switch)
    return lighthouse * step_s["lighthouse"] + dense * step_s["dense"]


def equal_time_steps(dense_steps: int, decay_fraction: float, step_s: dict, switch: float = None) -> int:
    """The most steps of a two-stage arm whose training time stays within that of ``dense_steps`` dense
    steps, given each mode's seconds per step."""
    budget = dense_steps * step_s["dense"]
    steps = dense_steps
    while arm_seconds(steps + 1, decay_fraction, step_s, switch) <= budget:
        steps += 1
    return steps


def median_step_s(metrics_path, skip: int = CALIBRATION_WARMUP) -> float:
    """Median step time of a calibration run's train records, leaving out its first ``skip`` steps."""
    records = [json.loads(line) for line in pathlib.Path(metrics_path).read_text().splitlines() if line.strip()]
    times = [r["step_s"] for r in records if r.get("kind", "train") == "train"][skip:]
    if not times:
        raise ValueError(f"{metrics_path}: no train records after the first {skip} steps")
    return statistics.median(times)


def make_plan(dense_seconds: float, decay_fraction: float, step_s: dict) -> dict:
    """Step counts of the three arms for a dense arm of about ``dense_seconds`` of training."""
    dense = round(dense_seconds / step_s["dense"])
    lighthouse, resumed = decay_split(dense, decay_fraction)
    if lighthouse < 1 or resumed < 1:
        raise ValueError(f"dense arm of {dense} steps ({dense_seconds} s at {step_s['dense']:.3g} s a step): a "
                         f"two-stage arm of as many steps needs at least one step in each stage (decay fraction "
                         f"{decay_fraction})")
    equal_time = equal_time_steps(dense, decay_fraction, step_s)
    return {
        "step_s": step_s,
        "decay_fraction": decay_fraction,
        "arms": {
            "dense": {"steps": dense, "lighthouse": False},
            "equal-time": {"steps": equal_time, "lighthouse": True},
            "equal-tokens": {"steps": dense, "lighthouse": True},
        },
        "seconds": {"dense": dense * step_s["dense"],
                    "equal-time": arm_seconds(equal_time, decay_fraction, step_s),
                    "equal-tokens": arm_seconds(dense, decay_fraction, step_s)},
    }


def final_val_nats(summary: dict) -> float:
    """Final dense-mode validation loss of a finished arm, nats per byte."""
    if summary.get("status") != "done":
        raise ValueError(f"{summary.get('name')}: expected a finished run, got status {summary.get('status')!r}")
    return summary["eval"]["val_bpb"] * LN2


def _arm_dir(root: pathlib.Path, seed: int, arm: str) -> pathlib.Path:
    return root / f"seed{seed}" / arm


def _train_command(preset: str, seed: int, steps: int, out: pathlib.Path, extra: list) -> list:
    return [sys.executable, "-m", "lighthouse.train", "--preset", preset, "--seed", str(seed), "--steps", str(steps),
            "--out", str(out), "--no-report", "--no-progress", *extra]


def _run_logged(command: list, log: pathlib.Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(command) + "\n")
        f.flush()
        return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode


def calibrate_mode(out: pathlib.Path, preset: str, lighthouse: bool, steps: int, extra: list) -> float:
    """Median seconds per step of one mode, from a short run in folder out (with nothing else on the GPU)."""
    if steps <= CALIBRATION_WARMUP:
        raise ValueError(f"calibration steps: expected more than {CALIBRATION_WARMUP}, got {steps}")
    command = [sys.executable, "-m", "lighthouse.train", "--preset", preset, "--steps", "1000",
               "--lighthouse-steps", "1000" if lighthouse else "0", "--stop-after-step", str(steps),
               "--eval-every", "0", "--out", str(out), "--no-report", "--no-progress", *extra]
    if _run_logged(command, out / "train.log") != 0:
        raise RuntimeError(f"calibration run {out} failed; see {out / 'train.log'}")
    return median_step_s(out / "metrics.jsonl")


def calibrate(runs: pathlib.Path, presets: dict, steps: int, extra: list) -> dict:
    """Seconds per step of each mode, from two short runs one after the other."""
    return {mode: calibrate_mode(runs / "calibration" / mode, preset, mode == "lighthouse", steps, extra)
            for mode, preset in presets.items()}


def _summary(out: pathlib.Path):
    """An arm folder's summary.json, None before the arm's first stop."""
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _status(out: pathlib.Path):
    """The status of an arm folder's summary ("done", "time", ...), None before its first stop."""
    summary = _summary(out)
    return None if summary is None else summary.get("status")


def _train_arm(args, plan: dict, seed: int, arm: str, preset: str, steps: int, split: list, seconds: float,
               deadline: float) -> str:
    """Train (or resume) one arm of a seed and copy a finished arm's files to the results. Returns its status:
    "done" (also when it already was, in the runs or the results), "not started" (its planned ``seconds`` no
    longer fit before the deadline), or the status or exit code of the stopped run. ``split`` gives the stage lengths explicitly,
    so one preset can serve every arm."""
    out = _arm_dir(args.runs, seed, arm)
    if _status(out) == "done" or _status(_arm_dir(args.results, seed, arm)) == "done":
        return "done"  # also when only the results hold it: a study resumed from its committed results
    left = deadline - time.time() - FINISH_RESERVE_S
    if left < START_MARGIN * seconds:
        return "not started"
    command = _train_command(preset, seed, steps, out,
                             ["--schedule", "wsd", "--decay-fraction", str(plan["decay_fraction"]), *split,
                              "--max-minutes", f"{left / 60.0:.2f}", *args.extra])
    code = _run_logged(command, out / "train.log")
    status = _status(out) or f"exit {code}"
    if status == "done":
        dest = _arm_dir(args.results, seed, arm)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "metrics.jsonl", "summary.json", "train.log"):
            (dest / name).write_bytes((out / name).read_bytes())
    return status


def _run_seed(seed: int, plan: dict, args, deadline: float) -> list:
    """Train the seed's arms in order until each is done or the deadline comes; returns their statuses."""
    statuses = []
    for arm, spec in plan["arms"].items():
        if arm not in args.arms:
            continue
        preset = plan["lighthouse_preset"] if spec["lighthouse"] else plan["dense_preset"]
        split = ["--switch-at-decay"] if spec["lighthouse"] else ["--lighthouse-steps", "0"]
        status = _train_arm(args, plan, seed, arm, preset, spec["steps"], split, plan["seconds"][arm], deadline)
        statuses.append((arm, status))
        if status != "done":
            break
    return statuses


def cmd_run(args) -> int:
    deadline = time.time() + args.deadline_s
    plan_path = args.runs / "plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
    else:
        if args.step_s:
            step_s = {"dense": args.step_s[0], "lighthouse": args.step_s[1], "given": True}
        else:
            step_s = calibrate(args.runs, {"dense": args.dense_preset, "lighthouse": args.lighthouse_preset},
                               args.calibration_steps, args.extra)
        plan = make_plan(args.dense_seconds, args.decay_fraction, step_s)
        plan.update({"dense_preset": args.dense_preset, "lighthouse_preset": args.lighthouse_preset,
                     "dense_seconds": args.dense_seconds, "extra": args.extra})
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "plan.json").write_text(plan_path.read_text())
    print(json.dumps(plan, indent=2), flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = {seed: pool.submit(_run_seed, seed, plan, args, deadline) for seed in args.seeds}
        for seed, future in futures.items():
            print(f"seed {seed}: " + ", ".join(f"{arm} {status}" for arm, status in future.result()), flush=True)
    return 0


def cmd_lever(args) -> int:
    """One lever: the Lighthouse arm with further options (and/or another switch point) at the dense arm's
    GPU time, its own stage-1 step time calibrated. Needs the study's plan.json (the dense arm's steps and
    step time)."""
    deadline = time.time() + args.deadline_s
    if args.switch is not None and not 0.0 < args.switch < 1.0:
        raise ValueError(f"--switch: expected a fraction strictly between 0 and 1, got {args.switch}")
    plan = json.loads((args.runs / "plan.json").read_text())
    lever_path = args.runs / "levers" / f"{args.name}.json"
    if lever_path.exists():
        lever = json.loads(lever_path.read_text())
    else:
        if args.lighthouse_step_s is not None:
            lighthouse_s = args.lighthouse_step_s
        else:
            lighthouse_s = calibrate_mode(args.runs / "calibration" / f"lever-{args.name}", plan["lighthouse_preset"],
                                          True, args.calibration_steps, args.extra)
        step_s = {"dense": plan["step_s"]["dense"], "lighthouse": lighthouse_s}
        steps = equal_time_steps(plan["arms"]["dense"]["steps"], plan["decay_fraction"], step_s, args.switch)
        lever = {"name": args.name, "options": args.extra, "switch": args.switch, "step_s": step_s, "steps": steps,
                 "stages": stage_split(steps, plan["decay_fraction"], args.switch),
                 "seconds": arm_seconds(steps, plan["decay_fraction"], step_s, args.switch)}
        lever_path.parent.mkdir(parents=True, exist_ok=True)
        lever_path.write_text(json.dumps(lever, indent=2) + "\n")
    print(json.dumps(lever, indent=2), flush=True)
    arm = f"lever-{args.name}"
    split = ["--switch-at-decay"] if args.switch is None else ["--lighthouse-steps", repr(float(args.switch))]
    for seed in args.seeds:
        status = _train_arm(args, plan, seed, arm, plan["lighthouse_preset"], lever["steps"], split,
                            lever["seconds"], deadline)
        dest = _arm_dir(args.results, seed, arm)
        if status == "done" and dest.is_dir():
            (dest / "lever.json").write_text(lever_path.read_text())
        print(f"seed {seed}: {arm} {status}", flush=True)
        if status != "done":
            break
    return 0


def _levers(results: pathlib.Path, finals: dict) -> list:
    """Each finished lever arm against the dense and the equal-time arm of its seed."""
    found = []
    for lever_json in sorted(results.glob("seed*/lever-*/lever.json")):
        seed = int(lever_json.parent.parent.name[len("seed"):])
        lever = json.loads(lever_json.read_text())
        final = final_val_nats(_summary(lever_json.parent))
        entry = {"lever": lever["name"], "options": lever["options"], "switch": lever["switch"], "seed": seed,
                 "steps": lever["steps"], "stages": lever["stages"], "step_s": lever["step_s"],
                 "final_val_nats": final, **_leak_and_spike(lever_json.parent)}
        for arm in ("dense", "equal-time"):
            if seed in finals.get(arm, {}):
                entry[f"delta_vs_{arm}"] = final - finals[arm][seed]
        found.append(entry)
    return found


def _leak_and_spike(arm_dir: pathlib.Path) -> dict:
    from .report import eval_at, load_run, switch_point, switch_spike

    run = load_run(arm_dir)
    switch = switch_point(run)
    at_switch = eval_at(run, switch[0]) if switch else None
    found = {"spike": switch_spike(run)}
    if at_switch:
        found.update({key: at_switch.get(key) for key in ("leak_t1", "leak_t1_se", "leak_t16", "leak_t16_se")})
        found["val_lh_nats_at_switch"] = at_switch.get("val_lh_bpb", math.nan) * LN2
        found["val_dense_nats_at_switch"] = at_switch["val_bpb"] * LN2
    return found


def summarize(results: pathlib.Path) -> dict:
    """Paired comparisons, speedups, leak and spike of the finished arms under ``results``."""
    plan = json.loads((results / "plan.json").read_text())
    step_s = plan["step_s"]
    finals, details = {}, {}
    for seed_dir in sorted(results.glob("seed*")):
        seed = int(seed_dir.name[len("seed"):])
        for arm in plan["arms"]:
            summary = _summary(seed_dir / arm)
            if summary is not None and summary.get("status") == "done":
                finals.setdefault(arm, {})[seed] = final_val_nats(summary)
                if plan["arms"][arm]["lighthouse"]:
                    details.setdefault(arm, {})[seed] = _leak_and_spike(seed_dir / arm)
    comparisons = []
    dense = finals.get("dense", {})
    for arm, spec in plan["arms"].items():
        if not spec["lighthouse"]:
            continue
        seeds = sorted(set(dense) & set(finals.get(arm, {})))
        if not seeds:
            continue
        deltas = [finals[arm][s] - dense[s] for s in seeds]
        comparisons.append({
            "comparison": f"{plan['lighthouse_preset']} vs {plan['dense_preset']}, {arm} "
                          f"({spec['steps']} vs {plan['arms']['dense']['steps']} steps)",
            "seeds": seeds, **paired_interval(deltas),
            "units": "nats/byte, final dense-mode validation loss, Lighthouse minus dense",
            "per_seed": deltas})
    tokens_arm = plan["arms"]["equal-tokens"]["steps"]
    return {
        "plan": plan,
        "final_val_nats": {arm: {str(s): v for s, v in per.items()} for arm, per in finals.items()},
        "comparisons": comparisons,
        "stage1_speedup": step_s["dense"] / step_s["lighthouse"],
        "end_to_end_speedup_equal_tokens": plan["seconds"]["dense"] / arm_seconds(
            tokens_arm, plan["decay_fraction"], step_s),
        "tokens_ratio_equal_time": plan["arms"]["equal-time"]["steps"] / plan["arms"]["dense"]["steps"],
        "leak_and_spike": {arm: {str(s): v for s, v in per.items()} for arm, per in details.items()},
        "levers": _levers(results, finals),
    }


def gpu_seconds(step: int, lighthouse_steps: int, step_s: dict) -> float:
    """Training time after ``step`` steps of an arm, at the calibrated seconds per step of each mode."""
    return min(step, lighthouse_steps) * step_s["lighthouse"] + max(0, step - lighthouse_steps) * step_s["dense"]


def _plotted_arms(seed_dir: pathlib.Path, plan: dict) -> list:
    """(name, seconds per step of each mode) of a seed's finished or stopped arms: the plan's, then the levers
    with their own calibrated stage-1 time."""
    arms = [(arm, plan["step_s"]) for arm in plan["arms"] if (seed_dir / arm / "summary.json").exists()]
    for lever_json in sorted(seed_dir.glob("lever-*/lever.json")):
        arms.append((lever_json.parent.name, json.loads(lever_json.read_text())["step_s"]))
    return arms


def plot_validation(results: pathlib.Path, summary: dict) -> pathlib.Path:
    """One panel per seed: every arm's validation curve (levers included) over calibrated training time (dense
    mode solid, Lighthouse mode dashed, the switch dotted)."""
    from .report import _pyplot, load_run, plot_val_curves

    plt = _pyplot()
    seeds = sorted(results.glob("seed*"), key=lambda d: int(d.name[len("seed"):]))
    fig, axes = plt.subplots(1, len(seeds), figsize=(max(7.5, 5.2 * len(seeds)), 4.8), squeeze=False, sharey=True)
    for ax, seed_dir in zip(axes[0], seeds):
        for i, (arm, step_s) in enumerate(_plotted_arms(seed_dir, summary["plan"])):
            run = load_run(seed_dir / arm)
            lighthouse_steps = run["summary"]["lighthouse_steps"]
            plot_val_curves(ax, run["evals"], lambda r: gpu_seconds(r["step"], lighthouse_steps, step_s),
                            f"C{i % 10}", arm)
            if 0 < lighthouse_steps < run["summary"]["step"]:
                ax.axvline(gpu_seconds(lighthouse_steps, lighthouse_steps, step_s), color=f"C{i % 10}",
                           linestyle=":")
        ax.set_title(seed_dir.name)
        ax.set_xlabel("training time at the calibrated step times (s)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation loss (nats/byte)")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("Validation loss (x: Lighthouse mode; dotted: the switch to dense)")
    fig.tight_layout()
    path = results / "validation.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_deltas(results: pathlib.Path, summary: dict) -> pathlib.Path:
    """Per comparison: each seed's difference and the mean with its 95% interval; per lever arm, its
    difference from the dense arm of its seed."""
    from .report import _pyplot

    plt = _pyplot()
    rows = [(c["comparison"].split(", ", 1)[1], c["per_seed"], c["delta_mean"], c["ci95_low"], c["ci95_high"])
            for c in summary["comparisons"]]
    rows += [(f"lever {v['lever']} (seed {v['seed']}, {v['steps']} steps)", [], v["delta_vs_dense"], None, None)
             for v in summary["levers"] if "delta_vs_dense" in v]
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.45 * len(rows)))
    for row, (_, per_seed, mean, low, high) in enumerate(rows):
        ax.scatter(per_seed, [row] * len(per_seed), color="gray", s=14, zorder=2)
        if low is not None:
            ax.plot([low, high], [row, row], color="C0", linewidth=3, zorder=1)
        ax.scatter([mean], [row], color="C0", s=40, zorder=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, *_ in rows], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("final validation loss, Lighthouse minus dense (nats/byte)")
    ax.set_title("Paired differences: seeds (gray), mean and 95% interval (blue)", fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path = results / "deltas.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cmd_summarize(args) -> int:
    summary = summarize(args.results)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.plots and any(args.results.glob("seed*/*/summary.json")):
        plot_validation(args.results, summary)
        if summary["comparisons"] or summary["levers"]:
            plot_deltas(args.results, summary)
    for c in summary["comparisons"]:
        interval = "" if c["ci95_low"] is None else f" [{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}]"
        print(f"{c['comparison']}: {c['delta_mean']:+.4f}{interval} over seeds {c['seeds']}")
    for lever in summary["levers"]:
        deltas = ", ".join(f"{lever[key]:+.4f} vs {key[len('delta_vs_'):]}" for key in lever
                           if key.startswith("delta_vs_"))
        print(f"lever {lever['lever']} (seed {lever['seed']}, {lever['steps']} steps): {deltas}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lighthouse.train.study", description=__doc__.split("\n\n")[0],
                                     epilog="run and lever pass the options after a -- to every lighthouse-train "
                                            "command they start")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="calibrate once, then train every seed's arms until the deadline (resumable)")
    r.add_argument("--runs", type=pathlib.Path, required=True, help="folder of the run folders and plan.json")
    r.add_argument("--results", type=pathlib.Path, required=True,
                   help="receives plan.json and each finished arm's config, metrics, summary and log")
    r.add_argument("--dense-preset", default="long-dense", help="read when the plan is made; later calls use the plan's")
    r.add_argument("--lighthouse-preset", default="long-paper", help="likewise")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--dense-seconds", type=float, default=90.0, help="training time of the dense arm")
    r.add_argument("--decay-fraction", type=float, default=0.2, help="the presets' wsd decay (the dense stage)")
    r.add_argument("--calibration-steps", type=int, default=CALIBRATION_STEPS,
                   help=f"steps timed per mode (the first {CALIBRATION_WARMUP} left out)")
    r.add_argument("--step-s", type=float, nargs=2, metavar=("DENSE", "LIGHTHOUSE"),
                   help="seconds per step of each mode, instead of a calibration (e.g. from an earlier plan.json)")
    r.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                   help="the arms to train (default all; another call can train the others from the same plan)")
    r.add_argument("--parallel", type=int, default=1, help="seeds trained at the same time")
    r.add_argument("--deadline-s", type=float, default=540.0, help="stop starting or continuing arms after this")
    v = sub.add_parser("lever", help="a lever arm (further train options, another switch) at the dense arm's "
                                     "GPU time, after `run` (uses its plan.json)")
    v.add_argument("name", help="the lever's name: its arm is seed<S>/lever-<name>")
    v.add_argument("--runs", type=pathlib.Path, required=True)
    v.add_argument("--results", type=pathlib.Path, required=True)
    v.add_argument("--seeds", type=int, nargs="+", default=[0])
    v.add_argument("--switch", type=float,
                   help="fraction of the steps in stage 1 (default: the switch at the start of the wsd decay)")
    v.add_argument("--calibration-steps", type=int, default=CALIBRATION_STEPS)
    v.add_argument("--lighthouse-step-s", type=float, help="seconds per stage-1 step, instead of a calibration")
    v.add_argument("--deadline-s", type=float, default=540.0)
    s = sub.add_parser("summarize", help="summary.json with the paired comparisons of the finished arms, and "
                                         "plots (validation.png, deltas.png)")
    s.add_argument("results", type=pathlib.Path)
    s.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)
    return parser


def main(argv=None) -> int:
    """Options after a ``--`` go to every lighthouse-train command of ``run`` and ``lever``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.extra = extra
    if args.command == "summarize" and extra:
        parser.error("summarize takes no lighthouse-train options")
    handler = {"run": cmd_run, "lever": cmd_lever, "summarize": cmd_summarize}[args.command]
    try:
        return handler(args)
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
