"""Inference throughput of precision x runtime variants, measured so that a noisy host cannot fake a gain.

All variants live in one process and are timed round-robin (the order rotates every round), so a burst of
load elsewhere hits them alike; each round gives one images/s figure per variant and we report the
median with the min..max range. The matmul peak of each precision is measured the same way, inside the
same rounds, and model FLOP utilisation is MFU = 2 * MACs/image * images/s / peak FLOP/s.
"""

from __future__ import annotations

import ctypes
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from ..infer_arch import spec_of
from ..models import count_macs, count_params
from .optimize import PRECISIONS, RUNTIMES, build_runtime

MATMUL_SIZE = 2048


@dataclass
class Result:
    """One variant at one batch size. Throughputs are per round; latencies (ms per batch) per call."""

    batch: int
    runtime: str
    precision: str
    fused: bool
    images_per_s: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None
    skipped: str | None = None

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.precision}" + ("" if self.fused else "/unfused")

    def summary(self) -> dict:
        s = {k: v for k, v in asdict(self).items() if k not in ("images_per_s", "latencies_ms")}
        if self.images_per_s:
            lat = sorted(self.latencies_ms)
            s.update(
                images_per_s_median=statistics.median(self.images_per_s),
                images_per_s_min=min(self.images_per_s),
                images_per_s_max=max(self.images_per_s),
                images_per_s_rounds=self.images_per_s,
                latency_ms_p50=_percentile(lat, 50),
                latency_ms_p90=_percentile(lat, 90),
                latency_ms_p99=_percentile(lat, 99),
            )
        return s


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list."""
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class _Plain(nn.Module):
    """The unmodified model, fp32 eager: the reference every speed-up is measured against."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)


def _matmul_fns(device: torch.device, size: int = MATMUL_SIZE) -> dict[str, Callable[[], object]]:
    """One large square matmul per precision; int8 uses torch._int_mm (int8 x int8 -> int32) if present.

    bf16 and int8 are included only where they have a fast kernel (`_runs_natively`): elsewhere (seen on an
    AMD EPYC VM without AVX-512: one 2048^3 bf16 product takes 17 s) their "peak" means nothing and would
    stall the benchmark."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(device) for _ in range(2))
    fns: dict[str, Callable[[], object]] = {"fp32": lambda: torch.mm(a, b)}
    if _runs_natively(lambda x: torch.mm(x, x), torch.bfloat16, device):
        a16, b16 = a.bfloat16(), b.bfloat16()
        fns["bf16"] = lambda: torch.mm(a16, b16)
    if hasattr(torch, "_int_mm") and _runs_natively(lambda x: torch._int_mm(x, x), torch.int8, device):
        a8 = torch.randint(-128, 128, (size, size), generator=g, dtype=torch.int8).to(device)
        b8 = torch.randint(-128, 128, (size, size), generator=g, dtype=torch.int8).to(device)
        fns["int8"] = lambda: torch._int_mm(a8, b8)
    return fns


def _runs_natively(
    mm: Callable[[torch.Tensor], object], dtype: torch.dtype, device: torch.device, size: int = 512
) -> bool:
    """Whether `mm` in `dtype` runs at least at half the fp32 matmul rate (best of 3 at `size`)."""

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return min(times)

    x32 = torch.ones(size, size, device=device)
    try:
        x = x32.to(dtype)
        return best(lambda: mm(x)) <= 2 * best(lambda: torch.mm(x32, x32))
    except RuntimeError:  # no kernel for this dtype on this device
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_heap() -> None:
    """glibc keeps freed memory mapped; malloc_trim hands it back, so RSS counts live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Extra memory at the peak of one call of `fn` (activations and workspace; the weights are already
    resident): the CUDA allocator's peak, or on Linux the process's peak resident set (VmHWM, reset
    through /proc/self/clear_refs) minus its size before the call. A runtime that keeps its own memory
    pool between calls (ONNX Runtime's arena) shows only what the pool had to grow by."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _release_free_heap()  # so the call has to take its working memory from the OS again
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _proc_status_kb("VmRSS")
    fn()
    peak = _proc_status_kb("VmHWM")
    return None if before is None or peak is None else max(0, peak - before) / 1024


def time_interleaved(
    runners: dict[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor | dict[str, torch.Tensor],
    *,
    rounds: int = 5,
    seconds: float = 1.0,
) -> dict[str, float]:
    """Median images/s of each runner on batch `x` (CPU; or a batch per runner name, for models of different
    input sizes), timed round-robin with the order rotating every round (as `run_benchmark` does), each for about
    `seconds` per round after one warm-up call."""
    inputs = x if isinstance(x, dict) else dict.fromkeys(runners, x)
    calls, rates = {}, {name: [] for name in runners}
    for name, fn in runners.items():
        t0 = time.perf_counter()
        fn(inputs[name])
        calls[name] = max(1, round(seconds / max(time.perf_counter() - t0, 1e-6)))
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            batch = inputs[name]
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                runners[name](batch)
            rates[name].append(len(batch) * calls[name] / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def machine_info() -> dict:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    info = {
        "cpu": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_benchmark(
    model: nn.Module,
    *,
    batches: list[int],
    precisions: list[str],
    runtimes: list[str],
    rounds: int = 5,
    seconds: float = 1.0,
    warmup: int = 1,
    baseline: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Time every runtime x precision variant of `model` (plus the plain unfused fp32 model as the
    baseline) at each batch size; returns a JSON-ready report with medians, ranges, MFU and speed-ups.

    `seconds` is the target time of one variant in one round (the number of calls follows from the
    warm-up latency).
    """
    from tqdm import tqdm

    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    for r in runtimes:
        if r not in RUNTIMES:
            raise ValueError(f"unknown runtime {r!r}; choose from {', '.join(RUNTIMES)}")
    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes must be positive integers, got {batches}")
    device = torch.device(device)
    model = model.to(device).eval()
    spec = spec_of(model)
    shape = spec.input_shape
    macs = count_macs(model, (1, *shape))
    report = {
        "model": spec.name,
        "img_size": shape[-1] if shape[-1] == shape[-2] else f"{shape[-2]}x{shape[-1]}",
        "params": count_params(model),
        "gmacs_per_image": macs / 1e9,
        "machine": machine_info(),
        "device": str(device),
        "rounds": rounds,
        "results": [],
        "matmul_peak_gflops": {},
    }

    # Build each variant once; every batch size reuses it (a compiled model specialises per shape).
    runners: dict[tuple[str, str, bool], nn.Module] = {}
    skipped: dict[tuple[str, str, bool], str] = {}
    specs = ([("eager", "fp32", False)] if baseline else []) + [(r, p, True) for r in runtimes for p in precisions]
    # int8 runs with its calibrated smoothing (an extra multiply per layer); speed does not depend on the
    # calibration images, so random ones do.
    calibration = torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))
    for spec in specs:
        runtime, precision, fused = spec
        try:
            runners[spec] = (
                _Plain(model)
                if not fused
                else build_runtime(model, precision=precision, runtime=runtime, calibration=calibration.to(device))
            )
        except (ValueError, RuntimeError) as e:  # e.g. no bf16 in ONNX Runtime, int8 on CUDA
            skipped[spec] = str(e).splitlines()[0]

    matmuls = _matmul_fns(device)
    peak_samples: dict[str, list[float]] = {k: [] for k in matmuls}
    for batch in batches:
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, *shape, generator=g).to(device)
        results = {spec: Result(batch, *spec, skipped=skipped.get(spec)) for spec in specs}
        live = [s for s in specs if s in runners]
        calls: dict[tuple, int] = {}
        bar = tqdm(total=len(live) * (rounds + 1), desc=f"batch {batch}", disable=not progress, leave=False)
        for spec in live:  # warm-up (and compilation): also sets how many calls fill `seconds`
            bar.set_postfix_str(f"warm-up {results[spec].label}")
            try:
                t = 0.0
                for _ in range(warmup):
                    t0 = time.perf_counter()
                    runners[spec](x)
                    _sync(device)
                    t = time.perf_counter() - t0
                calls[spec] = max(1, round(seconds / max(t, 1e-6)))
            except Exception as e:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
                results[spec].skipped = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            bar.update(1)
        live = [s for s in live if results[s].skipped is None]
        for r in range(rounds):
            order = live[r % len(live) :] + live[: r % len(live)] if live else []  # rotate the order each round
            for spec in order:
                bar.set_postfix_str(f"round {r + 1}/{rounds} {results[spec].label}")
                total = 0.0
                for _ in range(calls[spec]):
                    t0 = time.perf_counter()
                    runners[spec](x)
                    _sync(device)
                    dt = time.perf_counter() - t0
                    total += dt
                    results[spec].latencies_ms.append(dt * 1e3)
                results[spec].images_per_s.append(batch * calls[spec] / total)
                bar.update(1)
            for name, fn in matmuls.items():  # the machine's peak, sampled in the same noisy rounds
                fn()
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(3):
                    fn()
                _sync(device)
                peak_samples[name].append(3 * 2 * MATMUL_SIZE**3 / (time.perf_counter() - t0) / 1e9)
        bar.close()
        for spec in live:
            results[spec].peak_mem_mb = peak_memory_mb(lambda: runners[spec](x), device)
        report["results"] += [res.summary() for res in results.values()]

    peaks = {k: statistics.median(v) for k, v in peak_samples.items() if v}
    report["matmul_peak_gflops"] = peaks
    for row in report["results"]:
        if "images_per_s_median" not in row:
            continue
        base = next(
            (
                b
                for b in report["results"]
                if b["batch"] == row["batch"] and not b["fused"] and "images_per_s_median" in b
            ),
            None,
        )
        if base is not None:
            row["speedup"] = row["images_per_s_median"] / base["images_per_s_median"]
        peak = peaks.get(row["precision"])
        if peak:
            row["mfu"] = 2 * macs * row["images_per_s_median"] / (peak * 1e9)
    return report


def format_report(report: dict) -> str:
    m = report["machine"]
    peaks = ", ".join(f"{k} {v:,.0f}" for k, v in report["matmul_peak_gflops"].items())
    lines = [
        f"{report['model']} @ {report['img_size']}px: {report['params'] / 1e6:.2f} M params, "
        f"{report['gmacs_per_image']:.2f} GFLOPs (multiply-adds) per image",
        f"machine: {m['cpu']}{' / ' + m['gpu'] if 'gpu' in m else ''}, {m['threads']} threads, torch {m['torch']}; "
        f"device {report['device']}",
        f"measured matmul peak (GFLOP/s, {MATMUL_SIZE}^3): {peaks}",
        f"{report['rounds']} interleaved rounds; images/s as median [min-max]; latency per batch",
        "",
        f"{'batch':>5}  {'variant':<22}{'images/s':>10} {'[min-max]':<16}{'speedup':>8}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'peak MB':>9}{'MFU':>7}",
    ]
    for r in report["results"]:
        label = f"{r['runtime']}/{r['precision']}" + ("" if r["fused"] else "/unfused")
        if "images_per_s_median" not in r:
            lines.append(f"{r['batch']:>5}  {label:<22}skipped: {r['skipped']}")
            continue
        rng = f"[{r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f}]"
        mem = f"{r['peak_mem_mb']:.0f}" if r.get("peak_mem_mb") is not None else "-"
        mfu = f"{100 * r['mfu']:.0f}%" if "mfu" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        lines.append(
            f"{r['batch']:>5}  {label:<22}{r['images_per_s_median']:>10.1f} {rng:<16}{speed:>8}"
            f"{r['latency_ms_p50']:>9.1f}{r['latency_ms_p90']:>9.1f}{r['latency_ms_p99']:>9.1f}{mem:>9}{mfu:>7}"
        )
    return "\n".join(lines)
