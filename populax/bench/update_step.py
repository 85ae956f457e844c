"""`populax bench update-step`: the paper's Figure 2 timing study.

For each algorithm, steps-at-once K and population size N, every requested
implementation is built and compiled (compile time recorded separately),
warmed up, then timed in interleaved rounds -- each round gives every
implementation a few calls in turn -- so that their ratios are fair on a
noisy, shared machine. Achieved GFLOP/s use FLOPs from XLA's cost analysis of
the compiled single-member update, and the same run measures the machine's
dense float32 matmul peak for a roofline ratio: the best of one GEMM over all
cores and one GEMM per device at once (on a GPU, at the default precision,
TF32 on NVIDIA since Ampere, with the true float32 peak stated beside it).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from populax.errors import ConfigError


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark run."""

    algos: tuple[str, ...] = ("td3",)
    """Algorithms to time (each one entry of ``populax.bench.cases.CASES``)."""
    pops: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """Population sizes N."""
    impls: tuple[str, ...] = ("jax-sequential", "jax-vmap", "jax-sharded", "jax-parallel", "torch-sequential", "torch-vectorized", "auto")
    """Implementations to compare (see ``populax.bench.impls``)."""
    steps_at_once: tuple[int, ...] = (1,)
    """Updates per member per call (1, or 50 as the paper's scanned variant)."""
    calls: int = 50
    """Timed calls per point and implementation (median and p90 over them)."""
    rounds: int = 10
    """Interleaving rounds: each round times calls/rounds calls of every implementation."""
    warmup: int = 2
    """Untimed calls after compilation."""
    seed: int = 0
    """Seeds parameters, synthetic data and update keys."""
    hidden: tuple[int, ...] | None = None
    """Override the paper's network widths (tests use tiny ones)."""
    batch: int | None = None
    """Override the paper's batch size."""
    out: str = "bench/update-step.json"
    """JSON result; the CSV and PNG are written beside it."""
    matmul_size: int = 2048
    """Side of the square float32 matmul timed as the machine's peak."""
    torch_device: str = "auto"
    """Where the torch baselines run: auto (cuda when torch sees a GPU), cpu or cuda."""
    peak_devices: int = 1
    """Devices of the matmul timed beside each point (run_bench sets the best of ``peak_candidates``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes copied into the JSON's machine section."""


def parse_list(flag: str, text: str, kind: type = str) -> tuple:
    """A comma-separated flag value as a tuple, or a ConfigError naming the flag."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        values = tuple(kind(item) for item in items)
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated {kind.__name__} values, got {text!r}") from None
    if not values:
        raise ConfigError(f"{flag}: needs at least one value")
    return values


def check_config(config: BenchConfig) -> None:
    """Every user mistake as one ConfigError, before anything runs or is written."""
    from populax.bench.cases import CASES
    from populax.bench.impls import IMPLS

    for algo in config.algos:
        if algo not in CASES:
            raise ConfigError(f"--algo: no update-step benchmark for {algo!r}; allowed: {', '.join(CASES)}")
    for impl in config.impls:
        if impl not in IMPLS:
            raise ConfigError(f"--impl: unknown implementation {impl!r}; allowed: {', '.join(IMPLS)}")
    if any(n < 1 for n in config.pops):
        raise ConfigError("--pop: population sizes must be positive whole numbers")
    if any(k < 1 for k in config.steps_at_once):
        raise ConfigError("--steps-at-once: must be positive whole numbers (the paper uses 1 and 50)")
    if config.calls < 1 or config.rounds < 1 or config.calls < config.rounds:
        raise ConfigError("--calls: must be a positive whole number, at least --rounds")
    if config.torch_device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--torch-device: expected auto, cpu or cuda, got {config.torch_device!r}")
    if not config.out.endswith(".json"):
        raise ConfigError(f"--out: must name a .json file, got {config.out!r}")


class PeakMatmul:
    """``devices`` concurrent ``size x size`` float32 matmuls, one per device, timed like an implementation.

    ``devices=1`` is one matmul that XLA spreads over all cores (or one GPU);
    ``devices=D`` places one matmul on each of D local devices at once, as
    ``auto`` places members (on a CPU split into one device per core, this is
    what its members reach: one GEMM over all cores under-measures it).
    ``precision``: ``default`` is what the updates run at (plain float32 on a
    CPU, TF32 on NVIDIA GPUs since Ampere); ``highest`` forces true float32.
    """

    def __init__(self, size: int, devices: int = 1, precision: str = "default"):
        import jax
        import jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.size, self.devices, self.precision = size, devices, precision
        level = jax.lax.Precision.HIGHEST if precision == "highest" else jax.lax.Precision.DEFAULT
        a = jax.random.normal(jax.random.key(0), (devices, size, size), jnp.float32)
        if devices > 1:
            mesh = Mesh(np.asarray(jax.local_devices()[:devices]), ("device",))
            a = jax.device_put(a, NamedSharding(mesh, PartitionSpec("device")))
        self.a = a
        self.matmul = jax.jit(jax.vmap(lambda x: jnp.matmul(x, x, precision=level)))
        jax.block_until_ready(self.matmul(self.a))

    @property
    def label(self) -> str:
        """How this peak was taken, for the JSON and the plot."""
        where = "one GEMM over all cores" if self.devices == 1 else f"one GEMM per device on {self.devices} devices"
        return f"{where}, {self.precision} precision"

    def run(self, calls: int) -> list[float]:
        """Seconds of each of ``calls`` rounds of matmuls."""
        import jax

        from populax.bench.impls import timed_calls

        return timed_calls(lambda: jax.block_until_ready(self.matmul(self.a)), calls)

    def gflops(self, times: list[float]) -> float:
        """GFLOP/s at the median of ``times`` (all devices' matmuls together)."""
        return 2.0 * self.devices * self.size**3 / float(np.median(times)) / 1e9


def peak_candidates(size: int, platform: str | None = None) -> list[PeakMatmul]:
    """The ways to take the machine's peak: one GEMM, one GEMM per device; on accelerators also true float32."""
    import jax

    platform = platform or jax.default_backend()
    devices = jax.local_device_count()
    candidates = [PeakMatmul(size, 1)] + ([PeakMatmul(size, devices)] if devices > 1 else [])
    if platform != "cpu":  # the float32 peak without TF32, stated beside the default one
        candidates += [PeakMatmul(size, 1, "highest")] + ([PeakMatmul(size, devices, "highest")] if devices > 1 else [])
    return candidates


def machine_peaks(size: int, calls: int = 10) -> tuple[PeakMatmul, dict[str, float]]:
    """The best default-precision peak (the roofline's) and every candidate's GFLOP/s by label."""
    measured = {peak.label: (peak, peak.gflops(peak.run(calls))) for peak in peak_candidates(size)}
    best = max((p for p, _ in measured.values() if p.precision == "default"), key=lambda p: measured[p.label][1])
    return best, {label: gflops for label, (_, gflops) in measured.items()}


def matmul_peak_gflops(size: int, calls: int = 10) -> float:
    """The machine's dense float32 peak at default precision: the best of one GEMM and one GEMM per device."""
    best, peaks = machine_peaks(size, calls)
    return peaks[best.label]


def member_update_flops(case: Any) -> float:
    """FLOPs of one member's update from XLA's cost analysis.

    Compiled under ``vmap`` at N = 1, so data-dependent branches (TD3's delayed
    actor step) are counted as the vectorized implementations execute them.
    The same FLOP count is used for every implementation, so GFLOP/s compare
    like for like (per-call work, not per-implementation work).
    """
    import jax

    from populax.bench.cases import member_update

    one = jax.tree.map(lambda x: x[:1], (case.state, case.batch, case.keys, case.hparams))
    analysis = jax.jit(jax.vmap(member_update(case, 1))).lower(*one).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def machine_info() -> dict[str, Any]:
    """What machine and software produced the numbers."""
    import jax

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def summarize(times: list[float], pop: int, steps: int, flops: float) -> dict[str, float]:
    """Median/p90 of per-call seconds as the JSON's timing fields."""
    median = float(np.median(times))
    return {
        "median_ms": median * 1e3,
        "p90_ms": float(np.percentile(times, 90)) * 1e3,
        "per_member_ms": median * 1e3 / pop,
        "gflops": pop * steps * flops / median / 1e9,
        "calls": len(times),
    }


def bench_point(algo: str, pop: int, steps: int, config: BenchConfig, log: Any) -> list[dict[str, Any]]:
    """All implementations at one (algo, N, K), timed interleaved."""
    from populax.bench.cases import Skipped, make_case
    from populax.bench.impls import make_impl

    case = make_case(algo, pop, config.seed, hidden=config.hidden, batch=config.batch)
    flops = member_update_flops(case)
    impls, rows = {}, {}
    for name in config.impls:
        base = {"algo": algo, "impl": name, "pop": pop, "steps_at_once": steps, "member_update_flops": flops}
        start = time.perf_counter()
        try:
            impl = make_impl(name, case, steps, config.torch_device)
        except Skipped as reason:
            rows[name] = {**base, "skipped": str(reason)}
            log(f"  {name:17s} skipped: {reason}")
            continue
        impl.run(config.warmup)
        # As it happens, not only in the point's table: a point cut short by a time limit still says which
        # implementation took the time (the first GPU run lost two points without a clue).
        log(f"  {name:17s} built, compiled and warmed up in {time.perf_counter() - start:.1f}s")
        impls[name] = impl
        rows[name] = {**base, "compile_s": impl.compile_s}
    # The matmul peak takes its turn in every round too, so that each point's
    # roofline ratio compares GFLOP/s measured under the same load.
    peak = PeakMatmul(config.matmul_size, config.peak_devices)
    times, peak_times = {name: [] for name in impls}, []
    per_round = config.calls // config.rounds
    for round_ in range(config.rounds):
        extra = config.calls - per_round * config.rounds if round_ == config.rounds - 1 else 0
        for name, impl in impls.items():
            times[name] += impl.run(per_round + extra)
        peak_times += peak.run(2)
    point_peak = peak.gflops(peak_times)
    for name, impl in impls.items():
        impl.close()
        rows[name].update(summarize(times[name], pop, steps, flops))
        r = rows[name]
        r["point_peak_gflops"] = point_peak
        r["peak_fraction"] = r["gflops"] / point_peak
        log(f"  {name:17s} {r['median_ms']:9.2f} ms  p90 {r['p90_ms']:9.2f}  {r['per_member_ms']:8.2f} ms/member  "
            f"{r['gflops']:6.1f} GFLOP/s ({100 * r['peak_fraction']:3.0f}% of peak)  compile {r['compile_s']:.1f}s")
    log(f"  {'matmul peak':17s} {point_peak:6.1f} GFLOP/s (interleaved with this point)")
    return [rows[name] for name in config.impls]


def run_bench(config: BenchConfig, log: Any = print) -> dict[str, Any]:
    """Run the whole study; write JSON, CSV and PNG; return the JSON content."""
    check_config(config)
    machine = machine_info()
    machine["matmul_size"] = config.matmul_size
    best, peaks = machine_peaks(config.matmul_size)
    machine["matmul_peaks_gflops"] = peaks
    machine["matmul_peak_gflops"], machine["matmul_peak_kind"] = peaks[best.label], best.label
    machine.update(config.extra)
    for label, gflops in peaks.items():
        log(f"matmul peak, {label}: {gflops:.1f} GFLOP/s" + ("  <- the roofline's peak" if label == best.label else ""))
    config = replace(config, peak_devices=best.devices)
    report: dict[str, Any] = {"machine": machine, "results": []}
    for algo in config.algos:
        for steps in config.steps_at_once:
            for pop in config.pops:
                log(f"{algo} N={pop} steps-at-once={steps}")
                report["results"] += bench_point(algo, pop, steps, config, log)
                write_outputs(report, Path(config.out))  # an interrupted run keeps its finished points
    # the peak again at the end: the machine's load may have changed meanwhile
    machine["matmul_peak_gflops_end"] = matmul_peak_gflops(config.matmul_size)
    write_outputs(report, Path(config.out))
    return report


CSV_FIELDS = ("algo", "impl", "pop", "steps_at_once", "median_ms", "p90_ms", "per_member_ms", "compile_s", "gflops",
              "point_peak_gflops", "peak_fraction", "skipped")


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """``out`` (JSON), the same rows as CSV beside it, and the Figure-2-style PNG."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["results"])
    plot(report, out.with_suffix(".png"))


def plot(report: dict[str, Any], path: Path) -> None:
    """Per (algo, K): time per population update, per-member time and GFLOP/s vs N (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "median_ms" in r]
    groups = sorted({(r["algo"], r["steps_at_once"]) for r in rows}) or [("none", 1)]
    fig, axes = plt.subplots(len(groups), 3, figsize=(15, 4.2 * len(groups)), squeeze=False)
    peak = report["machine"]["matmul_peak_gflops"]
    for (algo, steps), ax_row in zip(groups, axes):
        for impl in dict.fromkeys(r["impl"] for r in rows):
            points = sorted((r["pop"], r) for r in rows if r["impl"] == impl and r["algo"] == algo and r["steps_at_once"] == steps)
            if not points:
                continue
            pops = [p for p, _ in points]
            for ax, key in zip(ax_row, ("median_ms", "per_member_ms", "gflops")):
                ax.plot(pops, [r[key] for _, r in points], marker="o", label=impl)
        titles = ("time per population update (ms)", "time per member (ms)", "achieved GFLOP/s")
        for ax, title in zip(ax_row, titles):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("population size N")
            ax.set_title(f"{algo}, {steps} step(s) at once: {title}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        ax_row[2].axhline(peak, color="black", linestyle="--", label=f"matmul peak {peak:.0f}")
        ax_row[0].legend(fontsize=8)
        ax_row[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
