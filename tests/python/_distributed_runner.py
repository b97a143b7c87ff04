"""Runs a function on W spawned CPU processes joined by a gloo process group on 127.0.0.1.

run_ranks(world, job, *args) starts W processes; rank r calls job(rank, world, *args) after
init_process_group and sends back what it returns (or its exception). The parent raises AssertionError when
a rank raised, died without a result (e.g. a crash inside a collective), or gave none within `timeout`
seconds (a hang); ranks still running then are terminated, so a hang fails the test instead of blocking it.
"""

import datetime
import os
import queue
import socket
import time
import traceback

import torch.multiprocessing as mp


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, job, args, results):
    import torch
    import torch.distributed as dist

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's transport stays on the loopback interface
    torch.set_num_threads(1)  # W processes share the machine's cores
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=60),
        )
        results.put((rank, "ok", job(rank, world, *args)))
    except BaseException:  # noqa: BLE001 -- reported to the parent with its traceback
        results.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _wait_for_results(processes, results, world, timeout):
    received = {}
    deadline = time.monotonic() + timeout
    while len(received) < world:
        try:
            rank, status, value = results.get(timeout=1)
        except queue.Empty:
            # A rank flushes its result before it exits, so an exited rank with nothing queued sent none.
            dead = [r for r, p in enumerate(processes) if r not in received and p.exitcode is not None]
            if dead and results.empty():
                codes = [processes[r].exitcode for r in dead]
                raise AssertionError(f"ranks {dead} of {world} exited (codes {codes}) without a result") from None
            if time.monotonic() > deadline:
                missing = sorted(set(range(world)) - set(received))
                raise AssertionError(f"ranks {missing} of {world} gave no result within {timeout} s (a hang)") from None
            continue
        if status == "error":
            raise AssertionError(f"rank {rank} of {world} raised:\n{value}")
        received[rank] = value
    return [received[rank] for rank in range(world)]


def run_ranks(world, job, *args, timeout=240):
    """[result of rank 0, ..., result of rank W-1] of job(rank, world, *args) on W processes."""
    context = mp.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [
        context.Process(target=_entry, args=(rank, world, port, job, args, results), daemon=True)
        for rank in range(world)
    ]
    for p in processes:
        p.start()
    try:
        return _wait_for_results(processes, results, world, timeout)
    finally:
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
