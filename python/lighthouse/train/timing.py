"""Timestamps of the work queued on a device, read back later, so that taking one never waits for the device.

On CUDA a timestamp is an event recorded on the device's current stream: it completes when the work queued
before it has run, and the time between two events is the device's time between them (idle time included).
Elsewhere the work has run by the time the call returns, and a timestamp is ``time.perf_counter()``.
"""

import time

import torch


class DeviceClock:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def now(self):
        """A timestamp after the work queued so far (a CUDA event or a perf_counter value)."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def seconds(self, start, end) -> float:
        """Seconds from start to end; on CUDA it waits until end has completed."""
        if not self.cuda:
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
