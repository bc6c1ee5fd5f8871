"""The test suite's time on two trees, counting only the test ids both trees have.

Answers "is the suite slower than it was at commit X?" without counting tests that X did not have. Both trees are
collected (``pytest --collect-only -q``), the common ids are kept, and each test file's common ids run in one pytest
process per tree, file by file and alternating which tree goes first, so that a busy shared machine slows both alike.
Each run's ``--durations=0`` is summed over setup and call per test (with ``--repeat N``: each test's fastest of N
runs). The report lists each file's sums, the totals, each tree's passed/skipped/failed counts (a skipped test costs
nothing: equal sums need equal skips), each run's CPU seconds (they include pytest's start-up) and the load average
before and after.

The baseline tree is a worktree of the old commit (``git worktree add /tmp/tree6e 6e3cc80``). Old code finds the
benchmark data at ``<tree>/../shared/data``: give it a ``shared`` beside it (``ln -s /work/shared /tmp/shared``).

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CI=1 .venv/bin/python benchmarks/bench_suite_time.py \
        --base /tmp/tree6e --new . [--repeat 2] [--files tests/test_chat.py ...]
"""

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from footage import load_average  # noqa: E402

DURATION = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S.*?)\s*$")
OUTCOMES = re.compile(r"(\d+) (passed|failed|skipped|error|errors|xfailed|xpassed)\b")


@dataclass
class Run:
    """One pytest process on one tree: seconds per test id (setup + call) and the outcome counts."""

    seconds: dict[str, float] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)
    wall: float = 0.0
    cpu: float = 0.0  # CPU seconds of the pytest process and what it started (collection and imports included)
    skips: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def collect(tree: Path, python: str, env: dict[str, str]) -> list[str]:
    """The test ids pytest collects in a tree."""
    out = subprocess.run([python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=tree,
                         env=env, capture_output=True, text=True)
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if not ids:
        raise SystemExit(f"no tests collected in {tree}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return ids


def run_ids(tree: Path, python: str, env: dict[str, str], ids: list[str]) -> Run:
    """Run these ids in the tree with --durations=0; parse seconds per id and the outcome counts."""
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", "--durations-min=0", "-rs", *ids]
    start, cpu_start = time.perf_counter(), children_cpu()
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    run = Run(wall=time.perf_counter() - start, cpu=children_cpu() - cpu_start)
    wanted = set(ids)
    for line in out.stdout.splitlines():
        m = DURATION.match(line)
        if m and m.group(2) in ("setup", "call") and m.group(3) in wanted:
            run.seconds[m.group(3)] = run.seconds.get(m.group(3), 0.0) + float(m.group(1))
        if line.startswith("SKIPPED"):
            run.skips.append(line)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    for n, kind in OUTCOMES.findall(summary):
        run.outcomes["error" if kind == "errors" else kind] += int(n)
    if out.returncode not in (0, 1):
        run.outcomes["pytest rc"] = out.returncode
    return run


def fastest(a: Run, b: Run) -> Run:
    """Each test's smaller time of two runs of the same ids; outcomes added up, CPU and wall the smaller."""
    seconds = {k: min(a.seconds.get(k, v), v) for k, v in b.seconds.items()}
    return Run(seconds={**a.seconds, **seconds}, outcomes=a.outcomes + b.outcomes, wall=min(a.wall, b.wall),
               cpu=min(a.cpu, b.cpu), skips=a.skips + b.skips)


def children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_env(tree: Path) -> dict[str, str]:
    """The environment for a tree's pytest: its own package first on the path (the venv may hold another editable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the baseline tree (a worktree of the old commit)")
    parser.add_argument("--new", type=Path, default=Path("."), help="the tree to compare (default: this checkout)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter both trees run under")
    parser.add_argument("--files", nargs="*", help="only these test files (default: every file with common ids)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each file this many times per tree and keep each test's fastest time (noise on a "
                             "shared machine only ever adds time)")
    parser.add_argument("--top", type=int, default=12, help="how many of the largest per-test changes to list")
    args = parser.parse_args()
    base, new = args.base.resolve(), args.new.resolve()
    if not (base.parent / "shared" / "data").is_dir():
        print(f"warning: {base.parent / 'shared' / 'data'} is missing: the old code's data tests will skip")

    ids_base = collect(base, args.python, tree_env(base))
    ids_new = collect(new, args.python, tree_env(new))
    common = [i for i in ids_base if i in set(ids_new)]
    by_file: dict[str, list[str]] = defaultdict(list)
    for test_id in common:
        by_file[test_id.split("::")[0]].append(test_id)
    files = sorted(by_file) if not args.files else [f for f in args.files if f in by_file]
    print(f"ids: base {len(ids_base)}, new {len(ids_new)}, common {len(common)} in {len(by_file)} files; "
          f"timing {sum(len(by_file[f]) for f in files)} ids in {len(files)} files")
    print(f"load average at start: {load_average()}  (cores: {os.cpu_count()})")

    runs: dict[str, dict[str, Run]] = {"base": {}, "new": {}}
    trees = {"base": base, "new": new}
    print(f"{'file':44s} {'base s':>8s} {'new s':>8s} {'change':>8s} {'base cpu':>9s} {'new cpu':>8s}"
          "  load before / after")
    for k, f in enumerate(files):
        order = ("base", "new") if k % 2 == 0 else ("new", "base")
        before = load_average()
        for _ in range(args.repeat):
            for name in order:
                run = run_ids(trees[name], args.python, tree_env(trees[name]), by_file[f])
                runs[name][f] = run if f not in runs[name] else fastest(runs[name][f], run)
        b, n = runs["base"][f], runs["new"][f]
        print(f"{f:44s} {b.total:8.1f} {n.total:8.1f} {n.total - b.total:+8.1f} {b.cpu:9.1f} {n.cpu:8.1f}"
              f"  {before} / {load_average()}", flush=True)

    totals = {name: sum(r.total for r in runs[name].values()) for name in runs}
    print(f"\ncommon-id setup+call sum: base {totals['base']:.1f} s, new {totals['new']:.1f} s "
          f"({totals['new'] - totals['base']:+.1f} s)")
    for name in runs:
        outcomes = sum((r.outcomes for r in runs[name].values()), Counter())
        wall = sum(r.wall for r in runs[name].values())
        cpu = sum(r.cpu for r in runs[name].values())
        print(f"  {name}: {dict(outcomes)}; pytest processes (start-up included): wall {wall:.1f} s, CPU {cpu:.1f} s")
        for line in (s for r in runs[name].values() for s in r.skips):
            print(f"    {line}")
    changes = []
    for f in files:
        for test_id in by_file[f]:
            b = runs["base"][f].seconds.get(test_id, 0.0)
            n = runs["new"][f].seconds.get(test_id, 0.0)
            changes.append((n - b, b, n, test_id))
    print("\nlargest changes (base s -> new s):")
    for d, b, n, test_id in sorted(changes, key=lambda c: -abs(c[0]))[:args.top]:
        print(f"  {d:+7.1f}  {b:6.1f} -> {n:6.1f}  {test_id}")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
