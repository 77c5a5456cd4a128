"""The prepared GPU check (``scripts/gpu_check.sh`` installs what it needs, then runs this).

Three steps, each timed, then one summary (also ``OUT/summary.json``):

(a) the rejection benchmark (``scripts/bench_rejection.py``): the CPU engine and the plain loop
    at equal parallelism, and on CUDA the plain loop against the batched engine on the same GPU;
    every verdict must agree;
(b) a real search: the embedded PostgreSQL, ``alz-worker --gpus 0``, the paper's segmentation
    proxy config (DeepLabV3+ R50, 128x128 crops, batch 32) on synthetic VOC + SBD data, a
    shortened schedule (a small dataset: ``--images`` training images, the config's 3 epochs);
    seconds per proxy evaluation and training iterations per second;
(c) ``alz retrain --gpus 0`` of the best loss with the paper's re-training config (DeepLabV3+
    R101, 512x512, SyncBN) cut to ``--retrain-epochs`` epochs on the same data.

No weights are downloaded (``model.backbone.init_cfg=None``: no network there). ``--smoke``
runs the same steps on a CPU with the tiny config and small sizes (the tests do, so the script
cannot rot).

    python scripts/gpu_check.py --out gpu_check_out            # on the GPU machine
    .venv/bin/python scripts/gpu_check.py --smoke --out /tmp/x # on a CPU, in a minute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], env: dict[str, str], log: Path, timeout: float | None = None,
         background: bool = False):  # noqa: ANN202 - CompletedProcess | Popen
    """Run ``cmd`` with its output appended to ``log`` (and echoed), fail loudly."""
    print("+ " + " ".join(cmd), flush=True)
    out = open(log, "a")  # noqa: SIM115 - closed by the caller's process end
    if background:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, cwd=REPO)
    out.write(done.stdout)
    out.close()
    tail = "\n".join(done.stdout.strip().splitlines()[-12:])
    print(tail, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"step failed ({done.returncode}): {' '.join(cmd)}")
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--smoke", action="store_true",
                    help="the CPU version: tiny config, small sizes, CPU workers")
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--retrain-epochs", type=int, default=1)
    args = ap.parse_args()

    import torch

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    work = out / "work"
    work.mkdir(exist_ok=True)
    cuda = torch.cuda.is_available() and not args.smoke
    py = sys.executable
    env = {**os.environ, "ALZ_DATA_DIR": str(work / "pg"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                      os.environ.get("PYTHONPATH")]))}
    env.pop("ALZ_DATABASE_URL", None)  # the embedded server
    alz = [py, "-m", "alz_db.cli"]
    summary: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                     "torch": torch.__version__, "smoke": args.smoke,
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    t_all = time.perf_counter()

    # (a) the rejection benchmark
    t0 = time.perf_counter()
    bench = [py, "scripts/bench_rejection.py", "--json", str(out / "rejection.json")]
    bench += (["--candidates", "4", "--iterations", "20", "--size", "16", "--per-core", "2",
               "--workers", "1"] if args.smoke else
              ["--candidates", str(args.candidates), "--per-core", "8", "--batch", "32",
               "--workers", str(min(8, len(os.sched_getaffinity(0))))])
    _run(bench, env, log, timeout=420)
    summary["rejection"] = json.loads((out / "rejection.json").read_text())
    summary["rejection"]["seconds"] = round(time.perf_counter() - t0, 1)

    # (b) a real search with a GPU worker on the embedded PostgreSQL
    t0 = time.perf_counter()
    from alz_core.data.voc import write_voc_dataset

    images = 24 if args.smoke else args.images
    size = 32 if args.smoke else 128
    root = write_voc_dataset(work / "VOC2012", images, size=size, val_count=8 if args.smoke
                             else 32, sbd=images // 2)
    _run(alz + ["db", "upgrade"], env, log, timeout=120)
    config = ["--config", "tiny"] if args.smoke else \
        ["--config", "proxy", "--cfg-options", "model.backbone.init_cfg=None"]
    name = f"gpu-check-{int(time.time())}"
    _run(alz + ["search", "create", name, "--data-root", str(root), "--budget",
                str(2 if args.smoke else args.budget), "--initial", "2", *config]
         + (["--proxy-iters", "4"] if args.smoke else []), env, log, timeout=300)
    watcher = _run(alz + ["search", "run", name, "--procs", "0"], env, log, background=True)
    for _ in range(120):  # the watcher marks the search running; the worker then serves it
        state = subprocess.run(alz + ["search", "status", name, "--json"], env=env, cwd=REPO,
                               capture_output=True, text=True)
        if state.returncode == 0 and json.loads(state.stdout)["status"] == "running":
            break
        time.sleep(0.5)
    worker = [py, "-m", "alz_db.cli.worker", "--search", name, "--idle-exit",
              "--data-dir", str(work / "data")]
    worker += ["--procs", "1"] if not cuda else ["--gpus", "0"]
    _run(worker, env, log, timeout=420)
    watcher.wait(timeout=60)
    os.environ.update({k: env[k] for k in ("ALZ_DATA_DIR",)})
    from alz_db import leaderboard, make_engine, make_session_factory, resolve_database_url
    from alz_db import session_scope as scope
    from alz_db.repo.queue import evaluations_of
    from alz_db.repo.searches import get_search

    engine = make_engine(resolve_database_url())
    try:
        with scope(make_session_factory(engine)) as s:
            info = get_search(s, name)
            evals = [e for e in evaluations_of(s, search_id=info.id) if e.seconds]
            top = leaderboard(s, info.id, limit=1)
    finally:
        engine.dispose()
    seconds = sorted(e.seconds for e in evals)
    its = [e.metrics.get("iterations", 0) / e.metrics["train_seconds"] for e in evals
           if (e.metrics or {}).get("train_seconds")]
    summary["search"] = {"status": info.status.value, "evaluations": info.evaluations_done,
                         "rejection_checks": info.rejection_checks,
                         "seconds_per_evaluation": seconds[len(seconds) // 2] if seconds
                         else None,
                         "iterations_per_second": sorted(its)[len(its) // 2] if its else None,
                         "best": None if not top else [top[0].fitness, top[0].formula],
                         "seconds": round(time.perf_counter() - t0, 1)}

    # (c) a short re-training under torch.distributed on the GPU
    t0 = time.perf_counter()
    cid = top[0].candidate_id if top else None
    if cid is not None:
        retrain = alz + ["retrain", str(cid), "--json", "--data-dir", str(work / "data")]
        retrain += (["--config", "tiny", "--max-iters", "4", "--nproc", "1"] if not cuda else
                    ["--gpus", "0", "--config", "retrain", "--cfg-options",
                     "model.backbone.init_cfg=None",
                     f"train_cfg.max_epochs={args.retrain_epochs}",
                     f"train_cfg.val_interval={args.retrain_epochs}"])
        done = _run(retrain, env, log, timeout=420)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        summary["retrain"] = {"iterations": result["iterations"], "seconds": result["seconds"],
                              "fitness": result["fitness"],
                              "iterations_per_second": result["iterations"] /
                              max(result["seconds"], 1e-9)}
    summary["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    r = summary["rejection"]
    print("\n== summary " + "=" * 60)
    print(f"device        {summary['device']} (torch {summary['torch']}), {summary['date']}")
    ratio = r["whole_machine"]["ratio"]
    print(f"rejection     {r['candidates']} candidates: CPU engine {ratio:.2f}x the plain loop"
          f" at {r['workers']} processes each"
          + (f"; CUDA batched {r['cuda']['ratio']:.2f}x the plain loop on the GPU "
             f"({r['candidates'] / r['cuda']['batched_s']:.2f} vs "
             f"{r['candidates'] / r['cuda']['plain_s']:.2f} candidates/s)" if "cuda" in r
             else "") + f"; verdict mismatches {r['mismatches']}")
    s = summary["search"]
    per_eval, per_it = s["seconds_per_evaluation"], s["iterations_per_second"]
    print(f"search        {s['status']}, {s['evaluations']} proxy evaluations, "
          f"{s['rejection_checks']} rejection checks; "
          f"{'-' if per_eval is None else f'{per_eval:.1f}'} s per proxy evaluation "
          f"(median), {'-' if per_it is None else f'{per_it:.2f}'} training it/s")
    if "retrain" in summary:
        t = summary["retrain"]
        print(f"retrain       {t['iterations']} iterations in {t['seconds']:.1f} s "
              f"({t['iterations_per_second']:.2f} it/s), fitness {t['fitness']}")
    print(f"total         {summary['seconds']} s")
    return 0 if r["mismatches"] == 0 and s["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
