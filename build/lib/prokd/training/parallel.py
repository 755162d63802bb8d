"""``prokd experiment --jobs N``: independent training steps as parallel processes.

A step may start once the steps that train its teachers are finished: the teachers, the
limit-trained teachers and the no-KD student at once, procedure 1 after the teacher, the
procedure-2 students after every limit-trained teacher. Each process gets an equal share of
the cores. Every step trains with its own seeds, and the evaluation after the steps runs
with the same per-step thread count, so the numbers equal ``--jobs 1``'s when the thread
count per step is the same (set ``train.threads`` to fix it).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from prokd.training.config import config_from_dict
from prokd.training.loop import build_soft_targets, training_finished
from prokd.training.runs import prepare_data

if TYPE_CHECKING:
    from prokd.training.experiment import Experiment, Step


def _run_step(
    config: dict[str, Any], out: str, step: Step, threads: int, reuse_from: tuple[Path, ...]
) -> float:
    """Child process: rebuild the experiment (preprocessed volumes come from the cache) and
    train one step with ``threads`` torch threads; returns its wall time."""
    from prokd.training.experiment import Experiment

    torch.set_num_threads(threads)
    start = time.perf_counter()
    resolved = config_from_dict(config)
    data = prepare_data(resolved)
    Experiment(resolved, Path(out), data, False, reuse_from=reuse_from).run_step(step)
    return time.perf_counter() - start


DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice for this machine


def threads_per_job(configured: int, jobs: int) -> int:
    """``train.threads`` when set, else an equal share of torch's default thread count."""
    return configured or max(1, DEFAULT_THREADS // jobs)


def run_parallel(exp: Experiment, steps: list[Step], jobs: int) -> None:
    """Train every unfinished step, up to ``jobs`` at a time, each once its teachers exist.

    Shared soft-target caches are built here, once, before the students that share them
    start. Progress is one line per finished step.
    """
    is_done = {s.name: training_finished(exp.out / "models" / s.name) for s in steps}
    pending = [s for s in steps if not is_done[s.name]]
    threads = threads_per_job(exp.config.train.threads, jobs)
    config = exp.config.to_dict()
    running: dict[Future, Step] = {}
    total, finished = len(pending), 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        while pending or running:
            ready = [s for s in pending if all(is_done[t] for t in s.teachers)]
            for step in ready[: jobs - len(running)]:
                if exp.soft_target_dir(step) is not None and exp.twin(step) is None:
                    build_soft_targets(exp.job(step), progress=False)
                args = (config, str(exp.out), step, threads, exp.reuse_from)
                running[pool.submit(_run_step, *args)] = step
                pending.remove(step)
            complete, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in complete:
                step = running.pop(future)
                seconds = future.result()  # a failed step raises here, in the parent
                is_done[step.name] = True
                finished += 1
                tqdm.write(f"[{finished}/{total}] {step.name} trained in {seconds:.0f} s")
