"""Timing and memory: median step time after warm-up, peak RSS, peak GPU memory."""
import resource
import statistics
import sys
import time

# Both models train with this learning rate: an SGD update costs the same at any rate, and
# random weights (fixbn from random init normalizes nothing) diverge to NaN at the config's
# rate within a few steps, which would change what proposal sampling and NMS do.
TIMING_LR = 1e-8


def progress(message):
    """A progress line on stdout (the parent process passes the workers' stdout through)."""
    print(f"[benchmark] {message}", flush=True)


def time_calls(fn, *, warmup, iters, label, sync, after_call=None):
    """Runs ``fn`` warmup + iters times; returns the iters timed durations in seconds.

    Args:
        fn: the work of one step (may return before the device finished).
        warmup: untimed calls first (graph binding, memory planning, caches).
        iters: timed calls.
        label: what is timed, for the progress lines.
        sync: waits for the device (mx.nd.waitall); each timed call ends with it, so
            asynchronous work is counted in the call that issued it.
        after_call: called after each call outside the timed span (e.g. a memory sample).
    """
    for k in range(warmup):
        progress(f"{label}: warm-up {k + 1}/{warmup}")
        fn()
        sync()
        if after_call is not None:
            after_call()
    durations = []
    for k in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        durations.append(time.perf_counter() - start)
        progress(f"{label}: iteration {k + 1}/{iters} {durations[-1]:.3f} s")
        if after_call is not None:
            after_call()
    return durations


def median(durations):
    return float(statistics.median(durations))


def peak_rss_mb():
    """This process's peak resident set size so far, in MiB (ru_maxrss: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class GpuMemoryPeak:
    """Peak used memory of one GPU, sampled with mx.context.gpu_memory_info (total - free).

    UNTESTED: no GPU was available where this was written. It counts what the device has in
    use, MXNet's pooled allocations and other processes included, so sample it after steps.
    """

    def __init__(self, device_id):
        self.device_id = int(device_id)
        self.peak_mb = 0.0

    def sample(self):
        import mxnet as mx

        free, total = mx.context.gpu_memory_info(self.device_id)
        self.peak_mb = max(self.peak_mb, (total - free) / (1024.0 * 1024.0))


class MemoryProbe:
    """The peak memory a benchmark reports: GPU memory on a GPU context, else the process RSS."""

    def __init__(self, context):
        self.gpu = GpuMemoryPeak(context.device_id) if context.device_type == "gpu" else None

    def sample(self):
        if self.gpu is not None:
            self.gpu.sample()

    def peak_mb(self):
        return self.gpu.peak_mb if self.gpu is not None else peak_rss_mb()

    @property
    def kind(self):
        return "gpu" if self.gpu is not None else "rss"
