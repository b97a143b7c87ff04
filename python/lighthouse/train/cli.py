"""``lighthouse-train``: train (the default command), eval, export, generate, compare and profile.

    lighthouse-train --preset tiny --out runs/tiny
    lighthouse-train --preset h200-lighthouse --data data/prose.jsonl.xz --max-minutes 6
    lighthouse-train --preset study-causal --out runs/study-causal
    lighthouse-train eval runs/tiny
    lighthouse-train export runs/tiny --out runs/tiny/hf
    lighthouse-train generate runs/tiny --prompt "It is a truth universally acknowledged"
    lighthouse-train compare runs/study-dense runs/study-paper runs/study-causal --out runs/compare
    lighthouse-train profile --preset h200-lighthouse --data data/prose.jsonl.xz --compile --out runs/profile
    torchrun --nproc-per-node 8 -m lighthouse.train --preset h200-lighthouse --context-parallel 4

A train command on a folder that already holds checkpoints resumes from the newest one with the
configuration saved in it; only the budget options (--max-minutes, --stop-after-step) and the
progress display apply to the resumed invocation (and, under torchrun, the process layout:
--context-parallel and the number of processes may change between invocations).
"""

import argparse
import datetime
import json
import pathlib
import shlex
import sys

from . import checkpoint as ckpt
from .model import NORMS, ROPE_MODES, SCORERS, SELECTIONS
from .presets import get_preset, preset_names

COMMANDS = ("train", "eval", "export", "generate", "compare", "profile")


def resolve_steps(total_default: int, lh_default: int, steps, lighthouse, dense):
    """(lighthouse_steps, dense_steps) from --steps and the per-stage options.

    A per-stage value containing a '.' is a fraction of the total steps. Given only --steps, the
    preset's split is kept in proportion; given one stage, the other stage takes the rest.
    """
    total = steps if steps is not None else total_default

    def count(text):
        if text is None:
            return None
        value = float(text) * total if "." in text else int(text)
        return int(round(value))

    lh, dn = count(lighthouse), count(dense)
    if lh is None and dn is None:
        lh = round(total * lh_default / total_default) if total_default else 0
        dn = total - lh
    elif dn is None:
        dn = total - lh
    elif lh is None:
        lh = total - dn
    elif steps is not None and lh + dn != steps:
        raise ValueError(f"--lighthouse-steps {lh} + --dense-steps {dn} != --steps {steps}")
    if lh < 0 or dn < 0 or lh + dn < 1:
        raise ValueError(f"invalid step split: {lh} Lighthouse + {dn} dense")
    return lh, dn


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model (the default command)")
    p.add_argument("--preset", default="tiny", choices=preset_names())
    p.add_argument("--out", type=pathlib.Path, help="run folder (default runs/<preset>)")
    p.add_argument("--steps", type=int, help="total optimizer steps")
    p.add_argument("--lighthouse-steps", help="stage-1 steps, or a fraction of --steps such as 0.75")
    p.add_argument("--dense-steps", help="stage-2 steps, or a fraction of --steps")
    p.add_argument("--data", nargs="+", help="corpus files: JSONL ({\"text\": ...}) or text, optionally .gz/.xz")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--schedule", choices=["cosine", "constant", "wsd"],
                   help="lr after warmup: cosine decay, constant, or wsd (stable, then a linear decay)")
    p.add_argument("--decay-fraction", type=float, help="wsd: the last fraction of the steps that decays")
    p.add_argument("--switch-at-decay", action=argparse.BooleanOptionalAction, default=None,
                   help="put the switch to dense attention at the start of the wsd decay "
                        "(lighthouse steps = total - decay steps; default: the preset's choice)")
    p.add_argument("--selection", choices=list(SELECTIONS), help="Lighthouse selection rule")
    p.add_argument("--rope", choices=list(ROPE_MODES),
                   help="pooled: rotate each kept pooled entry at its position; before: rotate, then pool")
    p.add_argument("--topk", type=int, help="Lighthouse: entries kept per level and tile budget step (k)")
    p.add_argument("--scorer", choices=list(SCORERS), help="Lighthouse: norm or dilated scorer")
    p.add_argument("--norm", choices=list(NORMS), help="RMSNorm arithmetic: composite (separate operations) or fused")
    p.add_argument("--dense-boundary", type=int, help="layers at each end that stay dense in stage 1")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int, help="evaluate every K steps (0: only at the switch and the end)")
    p.add_argument("--val-windows", type=int, help="windows of the fixed validation set")
    p.add_argument("--retrieval-distances", type=int, nargs="+", help="copy distances of the retrieval measure")
    p.add_argument("--passkey-trials", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the preset's)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--max-minutes", type=float, help="wall-clock budget of the training loop; stops with a checkpoint")
    p.add_argument("--stop-after-step", type=int, help="pause after this step with a checkpoint (resume later)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report/ (markdown + plots) when the run finishes")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--context-parallel", type=int, metavar="C",
                   help="under torchrun with W processes: C ranks share each sequence (W/C split the batch); "
                        "default 1 under torchrun, a single process otherwise")
    return p


def _configs_from_args(args):
    preset = get_preset(args.preset)
    model, train = preset.model, preset.train
    train.lighthouse_steps, train.dense_steps = resolve_steps(
        train.total_steps, train.lighthouse_steps, args.steps, args.lighthouse_steps, args.dense_steps)
    _override(train, args, ("batch_size", "grad_accum", "lr", "warmup_steps", "schedule", "decay_fraction", "seed",
                            "eval_every", "val_windows", "checkpoint_every", "device", "bf16", "compile",
                            "activation_checkpointing"))
    if args.passkey_trials is not None:
        train.passkey.trials = args.passkey_trials
    if args.retrieval_distances:
        train.retrieval.distances = args.retrieval_distances
    if args.seq_len is not None:
        model.max_seq_len = args.seq_len
    if args.selection is not None:
        model.lighthouse.selection = args.selection
    if args.rope is not None:
        model.lighthouse.rope = args.rope
    if args.topk is not None:
        model.lighthouse.topk = args.topk
    if args.scorer is not None:
        model.lighthouse.scorer = args.scorer
    if args.dense_boundary is not None:
        model.dense_boundary = args.dense_boundary
    if args.norm is not None:
        model.norm = args.norm
    _place_switch(args, preset.switch_at_decay, train)
    return model, train


def _override(train, args, names: tuple) -> None:
    """The train config fields named, and the corpus, from the options given on the command line."""
    for name in names:
        value = getattr(args, name)
        if value is not None:
            setattr(train, name, value)
    if args.data:
        train.data = [str(pathlib.Path(p)) for p in args.data]


def _place_switch(args, preset_default: bool, train) -> None:
    """--switch-at-decay: the Lighthouse stage ends where the wsd decay begins.

    Given explicitly it conflicts with explicit stage lengths and needs the wsd schedule; as a preset
    default it yields to explicit stage lengths and to another schedule.
    """
    from .trainer import decay_steps

    explicit_stages = args.lighthouse_steps is not None or args.dense_steps is not None
    if args.switch_at_decay and explicit_stages:
        raise ValueError("--switch-at-decay sets the stage lengths; leave out --lighthouse-steps/--dense-steps")
    if args.switch_at_decay is not None:
        wanted = args.switch_at_decay
    else:
        wanted = preset_default and not explicit_stages and train.schedule == "wsd"
    if not wanted:
        return
    if train.schedule != "wsd":
        raise ValueError(f"--switch-at-decay: expected --schedule wsd, got {train.schedule}")
    dense = decay_steps(train)
    if dense < 1 or dense >= train.total_steps:
        raise ValueError(f"--switch-at-decay: the decay of {dense} steps leaves no room for two stages "
                         f"in {train.total_steps} steps")
    train.lighthouse_steps, train.dense_steps = train.total_steps - dense, dense


def _context_parallel(args):
    """C of a run over several processes (1 under torchrun without --context-parallel), None for one process."""
    from .parallel import launched_by_torchrun

    if args.context_parallel is None and not launched_by_torchrun():
        return None
    return 1 if args.context_parallel is None else args.context_parallel


def cmd_train(args) -> int:
    context = _context_parallel(args)
    if context is None:
        return _train(args, None)
    import torch.distributed as dist

    try:
        return _train(args, context)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(args, context) -> int:
    """The train command; over several processes (context not None) rank 0 alone prints and reports."""
    from .report import compare
    from .trainer import Trainer, phase

    out = args.out or pathlib.Path("runs") / args.preset
    if ckpt.latest_checkpoint(out):
        resuming = f"resuming {out} from {ckpt.latest_checkpoint(out).name}"
        trainer = Trainer(out, context_parallel=context)
    else:
        resuming = None
        model, train = _configs_from_args(args)
        trainer = Trainer(out, model, train, context_parallel=context)
    if trainer.is_main:
        if resuming:
            print(resuming, file=sys.stderr)
        print(f"{trainer.cfg.name}: {trainer.model.num_parameters():,} parameters, "
              f"{trainer.cfg.lighthouse_steps} Lighthouse + {trainer.cfg.dense_steps} dense steps, "
              f"layers {trainer.model.attention_modes()} on {trainer.device}{_layout_note(trainer)}", file=sys.stderr)
        print(trainer.validation_note(), file=sys.stderr)
    status = trainer.run(max_minutes=args.max_minutes, stop_after_step=args.stop_after_step, progress=args.progress)
    summary = trainer.finish(status, args.progress)
    if not trainer.is_main:
        return 0
    if status == "done" and args.report:
        with phase(f"report: {out / 'report' / 'report.md'} and its plots", args.progress):
            compare([out], out / "report")
    print(json.dumps(summary, indent=2))
    return 0


def _layout_note(trainer) -> str:
    if trainer.parallel is None:
        return ""
    p = trainer.parallel
    return (f" (rank 0 of W = {p.world}: C = {p.context} ranks share each sequence, W / C = {p.data_parallel} "
            f"split the batch)")


def _checkpoint_from(path: pathlib.Path) -> dict:
    if path.is_dir() and not ckpt.is_sharded(path):
        latest = ckpt.latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"{path} holds no checkpoints")
        path = latest
    return ckpt.load_checkpoint(path)


def cmd_eval(args) -> int:
    from .data import default_corpus, load_corpus
    from .evaluate import Evaluator
    from .model import ByteLlama, ModelConfig
    from .trainer import TrainConfig, resolve_device

    state = _checkpoint_from(args.run)
    model_config = ModelConfig.from_dict(state["model_config"])
    train = TrainConfig.from_dict(state["train_config"])
    for key in ("lengths", "depths"):
        value = getattr(args, f"passkey_{key}")
        if value:
            setattr(train.passkey, key, value)
    if args.passkey_trials is not None:
        train.passkey.trials = args.passkey_trials
    if args.val_windows is not None:
        train.val_windows = args.val_windows
    if args.retrieval_distances:
        train.retrieval.distances = args.retrieval_distances
    device = resolve_device(args.device or train.device)
    model = ByteLlama(model_config)
    model.load_state_dict(state["model"])
    model.to(device)
    corpus = load_corpus(args.data or train.data or [default_corpus()], train.val_fraction, train.seed)
    evaluator = Evaluator(corpus.val, model_config.max_seq_len, train, device, train.bf16 and device.type == "cuda",
                          lighthouse=train.lighthouse_steps > 0)
    result = {"step": state["step"], **evaluator.point(model), "retrieval": evaluator.retrieval(model),
              "passkey": evaluator.passkey(model)}
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        pathlib.Path(args.out).write_text(text)
    print(text, end="")
    return 0


def cmd_export(args) -> int:
    from .export import export_checkpoint

    out = export_checkpoint(_checkpoint_from(args.run), args.out, args.dtype)
    print(out)
    return 0


def cmd_generate(args) -> int:
    from .generate import generate, model_from_checkpoint
    from .trainer import TrainConfig, resolve_device

    state = _checkpoint_from(args.run)
    train = TrainConfig.from_dict(state["train_config"])
    device = resolve_device(args.device or train.device)
    model = model_from_checkpoint(state, device)
    print(generate(model, args.prompt, args.max_new_tokens, args.temperature, args.seed,
                   bf16=train.bf16 and device.type == "cuda"))
    return 0


def cmd_compare(args) -> int:
    from .report import compare

    print(compare(args.runs, args.out))
    return 0


def cmd_profile(args) -> int:
    from lighthouse.bench.environment import git_commit

    from .profile import profile, write

    preset = get_preset(args.preset)
    model, train = preset.model, preset.train
    _override(train, args, ("batch_size", "grad_accum", "device", "bf16", "compile"))
    if args.seq_len is not None:
        model.max_seq_len = args.seq_len
    if args.norm is not None:
        model.norm = args.norm
    if args.dense_boundary is not None:
        model.dense_boundary = args.dense_boundary
    result = profile(model, train, steps=args.steps, warmup=args.warmup, modes=args.modes, kernels=args.kernels)
    result.update({"commit": git_commit(), "command": shlex.join(["lighthouse-train", *args.argv]),
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    path = write(result, args.out, "" if args.dense_boundary is None else f"-dense-boundary-{args.dense_boundary}")
    print(path.read_text(), end="")
    print(f"written: {path} and {path.with_suffix('.json')}", file=sys.stderr)
    return 0


def _profile_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "profile", help="milliseconds and share of each part of a training step (attention, MLP, norms, RoPE, "
                        "projections, embedding, head + loss, optimizer, data, other), dense and Lighthouse mode",
        description="Build a preset's model, data and optimizer, run warm-up steps, then time --steps training "
                    "steps in each mode as a whole (tokens/s) and --steps more cut into categories whose times add "
                    "up to the step (see lighthouse/train/profile.py). Writes "
                    "OUT/<preset>[-compiled][-fused-norm].md and .json and prints the markdown.")
    p.add_argument("--preset", default="tiny", choices=preset_names())
    p.add_argument("--steps", type=int, default=5, help="measured steps per mode, timed whole and then profiled")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps per mode (compilation happens here)")
    p.add_argument("--modes", nargs="+", choices=["dense", "lighthouse"], default=["dense", "lighthouse"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (fullgraph); its forward and backward are then one category")
    p.add_argument("--kernels", action="store_true",
                   help="CUDA only: run --steps more steps per mode under torch.profiler and add the device time by "
                        "kernel family (attention, Lighthouse stages, GEMM, Triton, ATen, copies; "
                        "lighthouse/train/kernels.py): the one cut of a compiled step")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/profile"), help="output folder")
    p.add_argument("--data", nargs="+", help="corpus files (default: the preset's)")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the preset's)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--norm", choices=list(NORMS), help="RMSNorm arithmetic (default: the preset's)")
    p.add_argument("--dense-boundary", type=int,
                   help="layers at each end that stay dense in Lighthouse mode (default: the preset's); the files "
                        "are then named ...-dense-boundary-B")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lighthouse-train",
        description="Two-stage pretraining with Lighthouse attention, then dense resumption: "
                    "train (the default command), eval, export, generate, compare, profile.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = _train_parser(sub)
    # The top-level help lists train's options too (train is the default command): train's help
    # without its usage paragraph, its section title and its -h line.
    options = train.format_help().split("\n\n", 1)[1].split("\n", 2)[2]
    parser.epilog = "train options (lighthouse-train [train] OPTIONS):\n" + options

    e = sub.add_parser("eval", help="validation loss (dense; Lighthouse mode and leak probe for two-stage runs), "
                                    "retrieval and passkey of a checkpoint")
    e.add_argument("run", type=pathlib.Path, help="run folder (newest checkpoint) or checkpoint file")
    e.add_argument("--data", nargs="+", help="corpus to split (default: the run's)")
    e.add_argument("--val-windows", type=int)
    e.add_argument("--retrieval-distances", type=int, nargs="+")
    e.add_argument("--passkey-lengths", type=int, nargs="+")
    e.add_argument("--passkey-depths", type=float, nargs="+")
    e.add_argument("--passkey-trials", type=int)
    e.add_argument("--device")
    e.add_argument("--out", type=pathlib.Path, help="also write the JSON result here")

    x = sub.add_parser("export", help="write a Hugging Face Llama folder from a checkpoint")
    x.add_argument("run", type=pathlib.Path, help="run folder (newest checkpoint) or checkpoint file")
    x.add_argument("--out", type=pathlib.Path, required=True)
    x.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])

    g = sub.add_parser("generate", help="continue a prompt with a checkpoint's model (dense attention)")
    g.add_argument("run", type=pathlib.Path, help="run folder (newest checkpoint) or checkpoint file")
    g.add_argument("--prompt", required=True, help="text to continue (the model sees BOS, then its UTF-8 bytes)")
    g.add_argument("--max-new-tokens", type=int, default=200, help="at most this many bytes (stops early at EOS)")
    g.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 takes the argmax")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the run's)")

    c = sub.add_parser("compare", help="markdown table and plots comparing finished runs (first = baseline)")
    c.add_argument("runs", type=pathlib.Path, nargs="+")
    c.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/compare"))
    _profile_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "train")
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as given, recorded by profile in its results
    handler = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "generate": cmd_generate,
               "compare": cmd_compare, "profile": cmd_profile}[args.command]
    try:
        return handler(args)
    except ValueError as err:
        print(f"lighthouse-train: error: {err}", file=sys.stderr)
        return 2
