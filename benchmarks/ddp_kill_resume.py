"""Manual check: a ``torchrun`` job killed after its first checkpoint and resumed ends as an uninterrupted one.

    python benchmarks/ddp_kill_resume.py                      # 2 CPU ranks, `random` on the built-in data, 3 epochs
    python benchmarks/ddp_kill_resume.py --augmenter aclsrec --dataset ../shared/data/Beauty.txt --epochs 2

Runs ``torchrun --nproc-per-node N -m seqcl train …`` to the end (run a), starts
it again (run b), SIGKILLs torchrun and every worker as soon as ``last.pt``
exists, resumes b with ``torchrun … -m seqcl train --resume``, and compares
``metrics.jsonl`` (without timings), the summaries and ``best.pt``. Exit code 0
when all three are identical. Too slow for the test suite on 2 busy cores
(~1 minute); ``tests/test_distributed.py`` checks the same in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (torchrun starts each worker in a session of its own)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return [pid] + [p for k in kids for p in _tree(k)]


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="builtin")
    ap.add_argument("--augmenter", default="random")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="seqcl-ddp-kill-"))
    torchrun = [shutil.which("torchrun") or "torchrun", "--standalone", "--nproc-per-node", str(args.nproc),
                "-m", "seqcl", "train"]
    train = ["--dataset", args.dataset, "--augmenter", args.augmenter, "--epochs", str(args.epochs),
             "--set", f"train.device={args.device}", "--set", "train.patience=1000",
             *[x for s in args.extra for x in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    full = subprocess.run(torchrun + train + ["--set", f"run.dir={root / 'a'}"], capture_output=True, text=True,
                          env=env)
    print(f"uninterrupted: exit {full.returncode}, {time.perf_counter() - t0:.0f}s\n{full.stdout}", flush=True)
    if full.returncode:
        print(full.stderr[-3000:], file=sys.stderr)
        return 1
    proc = subprocess.Popen(torchrun + train + ["--set", f"run.dir={root / 'b'}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    while not list((root / "b").glob("*.incomplete/last.pt")):
        time.sleep(0.05)
    pids = _tree(proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    (path,) = (root / "b").glob("*.incomplete")
    print(f"SIGKILL to torchrun and {len(pids) - 1} workers after epoch(s) {[r['epoch'] for r in _records(path)]}")
    t0 = time.perf_counter()
    res = subprocess.run(torchrun[:-1] + ["train", "--resume", str(path)], capture_output=True, text=True, env=env)
    print(f"resumed: exit {res.returncode}, {time.perf_counter() - t0:.0f}s\n{res.stdout}", flush=True)
    if res.returncode:
        print(res.stderr[-3000:], file=sys.stderr)
        return 1
    (a,), (b,) = list((root / "a").iterdir()), list((root / "b").iterdir())
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    wa, wb = (torch.load(p / "best.pt", weights_only=True) for p in (a, b))
    checks = {
        "metrics.jsonl (losses, valid metrics)": _records(a) == _records(b),
        "summary.json valid/test": (sa["valid"], sa["test"]) == (sb["valid"], sb["test"]),
        "best.pt weights": all(torch.equal(wa[c][k], wb[c][k]) for c in wa for k in wa[c]
                               if isinstance(wa[c][k], torch.Tensor)),
    }
    for what, same in checks.items():
        print(f"{what}: {'identical' if same else 'DIFFERENT'}")
    print(f"run folders: {root}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
