"""Run one function over many independent tasks on all cores, with a tqdm progress bar (on a terminal)."""
from __future__ import annotations

import os


def run_parallel(function, tasks, workers: int | None = None, progress: bool = False, desc: str = "") -> list:
    """[function(task) for task in tasks], in order, over `workers` processes (default: all cores).

    `function` must be a module-level function (it is pickled). Workers are spawned (safe when the
    parent has threads, e.g. torch) with OMP_NUM_THREADS=1 and one OpenCV thread each, so N
    workers use N cores, not N x cores.
    """
    from tqdm import tqdm
    tasks = list(tasks)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    # disable=None: a bar on a terminal only; in a log file (`make demo > log`) its \r updates are noise
    bar = tqdm(total=len(tasks), desc=desc, unit="clip", disable=None if progress else True)
    results = []
    try:
        if workers == 1:
            for task in tasks:
                results.append(function(task))
                bar.update()
            return results
        import multiprocessing
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"      # inherited by the spawned workers
        try:
            with multiprocessing.get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
                for result in pool.imap(function, tasks, chunksize=2):
                    results.append(result)
                    bar.update()
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        return results
    finally:
        bar.close()


def _one_thread() -> None:
    from ._deps import require
    require("cv2").setNumThreads(1)
