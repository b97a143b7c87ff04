"""Training over several CPU processes (gloo): context parallelism (C ranks per sequence) and data parallelism
(FSDP2 over all W ranks) give the single-process model and run.

* The model on sequence shards: its logits equal the single-process model's bit for bit (Lighthouse and
  dense layers, both RoPE placements, KV heads split or copied over the ranks); its parameter gradients,
  summed over the ranks, equal the single-process gradients to 1e-5 relative (each rank sums its own
  positions' contributions, then the ranks are added: another summation order, nothing else).
* Training: the losses and gradient norms of four steps (two Lighthouse, two dense, two micro-batches each)
  equal one process's to 5e-6 relative, for W = 2 with C = 2 and C = 1, and W = 4 with C = 2 (a 2 x 2 mesh) and
  C = 4 (each KV head copied to two ranks). Not bitwise: the loss is summed per rank and then over the ranks,
  FSDP's reduce-scatter adds the ranks' weight gradients, and the gradient norm adds per-shard norms, each in
  another order than one process; AdamW carries those 1e-7 differences into the next steps. Measured: at
  most 2.5e-7 relative; a RoPE table read at the shard's local positions instead of its global ones moves
  the first step's loss by 3e-5 and its gradient norm by 5e-4.
* Resume: a run paused after step 2 and resumed (a new Trainer on the same ranks, past a torn record and a
  torn checkpoint folder) gives the same losses, evaluations and weights as an uninterrupted run, bit for
  bit. The same DCP checkpoint resumes on another
  layout (C = 1: the two ranks split the batch) and in one process, whose steps track the run to 5e-6.
* Bad layouts raise the same ValueError on every rank before any collective (the runner fails a hang).
"""

import json
import os
import pathlib
import random
import shutil

import pytest
import torch

from _distributed_runner import run_ranks

WORDS = ("the", "house", "letter", "morning", "walk", "sister", "quite", "never", "said", "would",
         "Elinor", "Bath", "carriage", "fortune", "evening", "ball", "dear", "young", "man", "hope")
STEPS = 4
LOSS_RTOL = 5e-6
GRAD_RTOL = 1e-5
_SEED = int.from_bytes(os.urandom(4), "little")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(_SEED)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    lines = []
    for i in range(12):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(300, 600))) + ".\n"
        lines.append(json.dumps({"id": f"doc{i}", "text": text}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _configs(corpus, seed, rope="pooled", **changes):
    """The test model (N = 64, 4 heads, 2 KV heads, layers dense/Lighthouse/Lighthouse/dense) and a run of
    2 Lighthouse + 2 dense steps of 2 micro-batches of 2 sequences."""
    from lighthouse.train.leak import LeakSettings
    from lighthouse.train.model import LighthouseSettings, ModelConfig
    from lighthouse.train.passkey import PasskeySettings
    from lighthouse.train.retrieval import RetrievalSettings
    from lighthouse.train.trainer import TrainConfig

    model_fields = {key: changes.pop(key) for key in ("max_seq_len", "n_heads", "n_kv_heads", "d_model")
                    if key in changes}
    model = ModelConfig(**{"d_model": 32, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 64,
                           "max_seq_len": 64, "rope_theta": 10000.0, "dense_boundary": 1,
                           "lighthouse": LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8, rope=rope),
                           **model_fields})
    fields = dict(lighthouse_steps=2, dense_steps=2, batch_size=2, grad_accum=2, lr=3e-3, warmup_steps=2,
                  data=[corpus], val_fraction=0.2, val_windows=4, device="cpu", checkpoint_every=2, seed=seed,
                  passkey=PasskeySettings(lengths=[256], depths=[0.0, 1.0], trials=2),
                  leak=LeakSettings(windows=2, positions=4),
                  retrieval=RetrievalSettings(span=8, distances=[8, 32], windows=2))
    fields.update(changes)
    return model, TrainConfig(**fields)


def _relative(actual, expected):
    return abs(actual - expected) / abs(expected)


# ---------------------------------------------------------------------------------------------------------
# The model on sequence shards


def _model_job(rank, world, seed):
    """{case: (logits equal, largest relative gradient difference)} of this rank's shard against one process."""
    import torch.distributed as dist

    from lighthouse.train.context import SequenceShard
    from lighthouse.train.model import ByteLlama, LighthouseSettings, ModelConfig

    report = {}
    generator = torch.Generator().manual_seed(seed)
    for rope in ("pooled", "before"):
        for kv_heads, scorer in ((2, "norm"), (1, "dilated")):  # KV heads split over W = 2, or copied to both
            for stage in ("lighthouse", "dense"):
                config = ModelConfig(d_model=32, n_layers=4, n_heads=4, n_kv_heads=kv_heads, ffn_hidden=64,
                                     max_seq_len=64, rope_theta=10000.0, dense_boundary=1,
                                     lighthouse=LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8,
                                                                   rope=rope, scorer=scorer))
                torch.manual_seed(int(torch.randint(1 << 30, (1,), generator=generator)))
                single = ByteLlama(config)
                with torch.no_grad():  # sharp attention, so that positions matter to the logits
                    for name, p in single.named_parameters():
                        if name.endswith(("q_proj.weight", "k_proj.weight")):
                            p.mul_(20)
                sharded = ByteLlama(config)
                sharded.load_state_dict(single.state_dict())
                sharded.shard_sequence(SequenceShard(dist.group.WORLD, rank, world))
                for model in (single, sharded):
                    model.set_stage(stage)
                tokens = torch.randint(0, 256, (2, 64), generator=generator)
                weights = torch.randn(2, 64, config.vocab_size, generator=generator)
                length = 64 // world
                mine = slice(rank * length, (rank + 1) * length)
                expected = single(tokens)
                actual = sharded(tokens[:, mine])
                (expected * weights).sum().backward()
                (actual * weights[:, mine]).sum().backward()
                worst = 0.0
                for a, e in zip(sharded.parameters(), single.parameters()):
                    summed = a.grad.clone()
                    dist.all_reduce(summed)
                    worst = max(worst, ((summed - e.grad).abs().max() / e.grad.abs().max()).item())
                report[f"{rope}-kv{kv_heads}-{stage}"] = (torch.equal(actual, expected[:, mine]), worst)
    return report


def test_model_on_sequence_shards_equals_the_single_process_model():
    for rank, report in enumerate(run_ranks(2, _model_job, _SEED)):
        for case, (logits_equal, gradient) in report.items():
            where = f"rank {rank}, {case}, seed {_SEED}"
            assert logits_equal, f"{where}: logits differ"
            assert gradient <= GRAD_RTOL, f"{where}: summed gradients differ by {gradient:.2e} relative"


# ---------------------------------------------------------------------------------------------------------
# Training


def _train_job(rank, world, run_root, corpus, seed, contexts):
    """{C: ([(loss, grad_norm, stage, tokens)] of the steps, rank 0's evaluation after them)} for each C."""
    from lighthouse.train.trainer import Trainer

    results = {}
    for context in contexts:
        trainer = Trainer(pathlib.Path(run_root) / f"C{context}", *_configs(corpus, seed), context_parallel=context)
        records = [trainer.train_step() for _ in range(STEPS)]
        results[context] = ([(r["loss"], r["grad_norm"], r["stage"], r["tokens"]) for r in records],
                            trainer.evaluate())
    return results


@pytest.fixture(scope="module")
def single_process_run(corpus, tmp_path_factory):
    from lighthouse.train.trainer import Trainer

    trainer = Trainer(tmp_path_factory.mktemp("single"), *_configs(corpus, _SEED))
    records = [trainer.train_step() for _ in range(STEPS)]
    return [(r["loss"], r["grad_norm"], r["stage"], r["tokens"]) for r in records], trainer.evaluate()


@pytest.mark.parametrize("world, contexts", [(2, (2, 1)), (4, (2, 4))], ids=["W2", "W4"])
def test_training_steps_equal_one_process(corpus, single_process_run, tmp_path, world, contexts):
    expected, expected_eval = single_process_run
    per_rank = run_ranks(world, _train_job, str(tmp_path), corpus, _SEED, contexts)
    for context in contexts:
        records, evaluation = per_rank[0][context]
        where = f"W = {world}, C = {context}, seed {_SEED}"
        for rank in range(1, world):
            assert per_rank[rank][context][0] == records, f"{where}: rank {rank} logged other numbers"
            assert per_rank[rank][context][1] is None, f"{where}: rank {rank} evaluated"
        for step, (actual, reference) in enumerate(zip(records, expected, strict=True), 1):
            text = f"{where}, step {step}: (loss, grad norm, stage, tokens) {actual} vs one process {reference}"
            assert actual[2:] == reference[2:], text
            assert _relative(actual[0], reference[0]) <= LOSS_RTOL, text
            assert _relative(actual[1], reference[1]) <= LOSS_RTOL, text
        for key in ("val_bpb", "val_lh_bpb", "leak_t1"):
            assert evaluation[key] == pytest.approx(expected_eval[key], rel=1e-5, abs=1e-6), f"{where}: {key}"
        lines = (tmp_path / f"C{context}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["kind"] for line in lines] == ["train"] * STEPS + ["eval"], f"{where}: {lines}"


# ---------------------------------------------------------------------------------------------------------
# Resume


def _full_weights(trainer):
    """The whole model state on rank 0 (None elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _resume_job(rank, world, run_root, corpus, seed):
    import torch.distributed as dist

    from lighthouse.train.trainer import Trainer

    root = pathlib.Path(run_root)
    configs = _configs(corpus, seed, eval_every=2, activation_checkpointing=True)
    straight = Trainer(root / "straight", *configs, context_parallel=2)
    status = straight.run(progress=False)
    summary = straight.finish(status, progress=False)
    straight_weights = _full_weights(straight)

    paused = Trainer(root / "paused", *configs, context_parallel=2)
    assert paused.run(stop_after_step=2, progress=False) == "paused"
    # As numpy arrays: tensors would travel to the parent through shared memory that dies with this process.
    paused_weights = {name: tensor.numpy() for name, tensor in _full_weights(paused).items()}
    if rank == 0:  # what a kill while saving step 4 and writing a record leaves behind
        staging = root / "paused" / "checkpoints" / ".step_00000004.tmp"
        staging.mkdir()
        (staging / "__0_0.distcp").write_bytes(b"torn")
        with open(root / "paused" / "metrics.jsonl", "a") as f:
            f.write('{"kind": "train", "step": 3, "sta')
    dist.barrier()
    resumed = Trainer(root / "paused", context_parallel=2)
    resumed_step = resumed.step
    resumed.finish(resumed.run(progress=False), progress=False)
    resumed_weights = _full_weights(resumed)
    same = rank != 0 or all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)

    # The step-2 checkpoint resumed on another layout: the two ranks split the batch instead of the sequence.
    if rank == 0:
        shutil.copytree(root / "paused" / "checkpoints" / "step_00000002",
                        root / "relayout" / "checkpoints" / "step_00000002")
    dist.barrier()
    relayout = Trainer(root / "relayout", context_parallel=1)
    relayout_losses = [relayout.train_step()["loss"] for _ in range(STEPS - relayout.step)]
    return {"status": status, "summary": summary, "resumed_step": resumed_step, "same_weights": same,
            "relayout_losses": relayout_losses, "step_2_weights": paused_weights}


def _records(run_dir, kind):
    """The run's records of a kind without their timings (step_s, wall_s, eval_s, tokens_per_s ...)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in map(json.loads, lines) if r["kind"] == kind]


def test_paused_and_resumed_run_equals_an_uninterrupted_one(corpus, tmp_path):
    from lighthouse.train import checkpoint as ckpt
    from lighthouse.train.trainer import Trainer

    per_rank = run_ranks(2, _resume_job, str(tmp_path), corpus, _SEED)
    first = per_rank[0]
    assert first["status"] == "done" and first["resumed_step"] == 2 and per_rank[1]["resumed_step"] == 2
    assert first["same_weights"], f"seed {_SEED}: resumed weights differ"
    assert per_rank[1]["summary"] is None
    summary = first["summary"]
    assert summary["parallel"] == {"world": 2, "context_parallel": 2, "data_parallel": 1}
    assert json.loads((tmp_path / "straight" / "summary.json").read_text()) == summary
    assert (tmp_path / "straight" / "hf" / "model.safetensors").exists()
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    assert _records(paused, "train") == _records(straight, "train") and len(_records(straight, "train")) == STEPS
    assert _records(paused, "eval") == _records(straight, "eval") and len(_records(straight, "eval")) == 2
    for loss, reference in zip(first["relayout_losses"], _records(straight, "train")[2:], strict=True):
        assert _relative(loss, reference["loss"]) <= LOSS_RTOL, (first["relayout_losses"], reference)
    for run in (straight, paused):
        names = [p.name for p in ckpt.list_checkpoints(run)]
        assert names == ["step_00000002", "step_00000004"], names
        assert not [p for p in ckpt.checkpoint_dir(run).iterdir() if p.name.startswith(".")]

    # One process reads the DCP checkpoint of step 2: the weights gathered at step 2, bit for bit (what eval
    # and export read), and a resumable state; its steps 3 and 4 then track the run over two ranks.
    state = ckpt.load_checkpoint(ckpt.checkpoint_dir(paused) / "step_00000002")
    assert state["step"] == 2 and state["parallel"]["context_parallel"] == 2
    gathered = first["step_2_weights"]
    assert set(state["model"]) == set(gathered)
    for name, array in gathered.items():
        assert torch.equal(state["model"][name], torch.from_numpy(array)), name
    single_dir = tmp_path / "single-resume"
    shutil.copytree(ckpt.checkpoint_dir(paused) / "step_00000002", ckpt.checkpoint_dir(single_dir) / "step_00000002")
    single = Trainer(single_dir)
    assert single.step == 2 and single.parallel is None
    for name, tensor in single.model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    records = [single.train_step() for _ in range(2)]
    for record, reference in zip(records, _records(straight, "train")[2:], strict=True):
        assert _relative(record["loss"], reference["loss"]) <= LOSS_RTOL, (record, reference)


# ---------------------------------------------------------------------------------------------------------
# Bad layouts


def _bad_layouts(corpus):
    """{name: (the start of the message every rank must raise, Trainer arguments)}."""
    return {
        "C not dividing W": ("--context-parallel: expected a divisor of the number of processes W = 2, got 3",
                             (_configs(corpus, 0), 3)),
        "N not divisible by C": ("--seq-len: expected a multiple of --context-parallel C = 2",
                                 (_configs(corpus, 0, max_seq_len=63), 2)),
        "heads not divisible by C": ("n_heads: expected a multiple of --context-parallel C = 2",
                                     (_configs(corpus, 0, d_model=24, n_heads=3, n_kv_heads=1), 2)),
        "KV heads neither a multiple nor a divisor of C": (
            "n_kv_heads: expected a multiple or a divisor of --context-parallel C = 2",
            (_configs(corpus, 0, d_model=48, n_heads=6, n_kv_heads=3), 2)),
        "batch not divisible by the data-parallel groups": (
            "--batch-size: expected a multiple of the data-parallel size W / C = 2",
            (_configs(corpus, 0, batch_size=1), 1)),
    }


def _errors_job(rank, world, run_root, corpus):
    from lighthouse.train.trainer import Trainer

    outcomes = {}
    for name, (_, (configs, context)) in _bad_layouts(corpus).items():
        try:
            Trainer(pathlib.Path(run_root) / name.replace(" ", "-"), *configs, context_parallel=context)
            outcomes[name] = "no error"
        except ValueError as e:
            outcomes[name] = str(e)
    # A single-process run's checkpoint is not resumed over several processes.
    single_run = pathlib.Path(run_root) / "single"
    try:
        Trainer(single_run, context_parallel=2)
        outcomes["a single-process checkpoint"] = "no error"
    except ValueError as e:
        outcomes["a single-process checkpoint"] = str(e)
    # After the errors the ranks still work together.
    trainer = Trainer(pathlib.Path(run_root) / "valid", *_configs(corpus, 0), context_parallel=2)
    outcomes["a valid run afterwards"] = trainer.train_step()["loss"]
    return outcomes


def test_bad_layouts_raise_on_every_rank(corpus, tmp_path):
    from lighthouse.train.trainer import Trainer

    single = Trainer(tmp_path / "single", *_configs(corpus, 0, lighthouse_steps=0, dense_steps=1))
    single.run(progress=False)
    per_rank = run_ranks(2, _errors_job, str(tmp_path), corpus, timeout=120)
    expected = {name: message for name, (message, _) in _bad_layouts(corpus).items()}
    expected["a single-process checkpoint"] = "expected the checkpoint folder of a run over several processes"
    for rank, outcomes in enumerate(per_rank):
        for name, message in expected.items():
            assert message in outcomes[name], f"rank {rank}, {name}: {outcomes[name]}"
        assert outcomes["a valid run afterwards"] == per_rank[0]["a valid run afterwards"]


def test_context_parallel_needs_several_processes(corpus, tmp_path):
    from lighthouse.train.trainer import Trainer

    with pytest.raises(ValueError, match=r"^--context-parallel: expected a launch by torchrun"):
        Trainer(tmp_path, *_configs(corpus, 0), context_parallel=2)
