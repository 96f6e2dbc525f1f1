"""Plumbing shared by the benchmark scripts: command line, run context, atomic outputs.

Every script is ``python benchmarks/bench_X.py [--quick] [--out DIR]``; it writes its tables
as CSV (one per table) and one Markdown file with a header that records what the numbers
depend on: the command, the load average when the run started and ended (the machine is
shared, so absolute times drift; the ratios are measured side by side in one process), the
torch version and thread count, and the script's own wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from _harness import peak_memory, to_markdown

from stiffkit.io import atomic_write, save_frame

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


#: Default intra-op threads. On this shared 2-core machine two OpenMP threads collapse as soon
#: as another process is busy: a barrier waits for a descheduled thread, so every parallel op
#: costs a scheduler time slice (measured: one learned-model evaluation at batch 1k took
#: ~530 ms with 2 threads against ~7 ms with 1 while another job ran). One thread keeps the
#: numbers meaningful under load; pass ``--threads 2`` on a quiet machine.
DEFAULT_THREADS = 1

#: Environment variables that change timings; those set are recorded in each report's command.
ENV_PREFIXES = ("MALLOC_", "OMP_", "MKL_")


def parse_args(doc: str, argv: Sequence[str] | None = None, extra=None) -> argparse.Namespace:
    """Parse ``--quick``, ``--out`` and ``--threads`` (plus whatever ``extra(parser)`` adds).

    Also applies ``--threads`` (``torch.set_num_threads``) before anything is timed.
    """
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke-sized run (seconds; used by the tests)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the .csv/.md results (default benchmarks/results, "
                             "benchmarks/results/quick with --quick)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch intra-op threads (default {DEFAULT_THREADS}; "
                             "see benchmarks/README.md)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("`--threads` must be a positive integer.")
    if args.out is None:  # a smoke run never overwrites the committed full-run results
        args.out = RESULTS / "quick" if args.quick else RESULTS
    torch.set_num_threads(args.threads)
    return args


@dataclass
class Run:
    """The context of one benchmark run, for the header of its Markdown file."""

    script: str
    quick: bool
    argv: list[str] = field(default_factory=lambda: list(sys.argv[1:]))
    load_start: tuple[float, float, float] = field(default_factory=os.getloadavg)
    started: float = field(default_factory=time.perf_counter)

    def header(self) -> str:
        load_end = os.getloadavg()
        wall = time.perf_counter() - self.started
        env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                       if k.startswith(ENV_PREFIXES))
        cmd = " ".join([*([env] if env else []), "python", f"benchmarks/{self.script}", *self.argv])
        return "\n".join([
            f"Command: `{cmd}`"
            f"{' (quick smoke run: tiny sizes, numbers not meaningful)' if self.quick else ''}  ",
            f"Load average (1/5/15 min) at start: {_fmt_load(self.load_start)}; at end: "
            f"{_fmt_load(load_end)} on {os.cpu_count()} cores (shared machine)  ",
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python "
            f"{platform.python_version()}; script wall time {wall:.1f} s  ",
            "Ratios come from candidates timed in alternation in one process (rotating order, "
            "medians); absolute times are for context only.",
        ])


def _fmt_load(load: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in load)


def write_results(run: Run, out: Path, name: str, title: str,
                  tables: Sequence[tuple[str, pd.DataFrame, str]], notes: str = "",
                  floatfmt: str = ".4g") -> str:
    """Write each table to ``{out}/{name}[_{key}].csv`` and all of them to ``{out}/{name}.md``.

    ``tables`` holds ``(key, frame, heading)``; an empty key names the CSV ``{name}.csv``.
    Returns the Markdown text (the scripts print it).
    """
    parts = [f"## {title}", "", run.header(), ""]
    for key, df, heading in tables:
        save_frame(df, out / (f"{name}_{key}.csv" if key else f"{name}.csv"))
        parts += [f"### {heading}", "", to_markdown(df, floatfmt=floatfmt), ""]
    if notes:
        parts += [notes.strip(), ""]
    md = "\n".join(parts)
    atomic_write(out / f"{name}.md", lambda tmp: Path(tmp).write_text(md))
    return md


def peak_memory_1t(fn) -> int:
    """:func:`benchmarks/_harness.py.peak_memory` with the child forced to one thread.

    A forked child inherits GNU OpenMP's state but not its worker threads: once the parent
    has run any multi-threaded torch op (a matmul is enough), the child's first parallel
    region waits for the missing workers forever (measured: ``peak_memory`` of a matmul
    after a matmul never returns). ``torch.set_num_threads(1)`` in the child — as torch's
    DataLoader workers do — avoids the parallel runtime; peak memory is then that of a
    one-thread run (per-thread scratch not counted).
    """

    def single_thread():
        torch.set_num_threads(1)
        return fn()

    return peak_memory(single_thread)
