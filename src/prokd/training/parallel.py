"""A scheduler of dependent tasks as parallel processes (``prokd experiment --jobs N``).

A task may start once the tasks it needs are finished. Each runs ``work(*arguments(name))``
in a fresh (spawned) process and returns its wall time; at most ``jobs`` run at once. The
scheduler knows nothing of what the tasks do: the caller gives the work function (a
module-level function, so that it can be pickled), its arguments, and a hook run in this
process just before a task starts. A worker whose parent dies (a killed ``prokd
experiment`` or ``prokd study``) exits within a second instead of training on into a run
folder that is no longer its own.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from tqdm import tqdm

PARENT_CHECK_SECONDS = 0.5


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: a daemon thread ends the worker once ``parent`` is gone (the
    worker has been handed to another parent)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def run_dependent(
    needs: dict[str, tuple[str, ...]],
    finished: set[str],
    jobs: int,
    work: Callable[..., float],
    arguments: Callable[[str], tuple],
    before_start: Callable[[str], None] | None = None,
) -> None:
    """Run every task of ``needs`` (task name -> names of the tasks it needs) that is not
    in ``finished``, up to ``jobs`` at a time, each once the tasks it needs are finished.

    Progress is one line per finished task. A task that fails raises here, in the parent.

    Raises:
        ValueError: a task needs a task that neither exists nor is finished, or tasks need
            each other in a circle.
    """
    done = set(finished)
    pending = [name for name in needs if name not in done]
    unknown = {n for name in pending for n in needs[name]} - set(needs) - done
    if unknown:
        raise ValueError(f"tasks need unknown tasks: {sorted(unknown)}")
    running: dict[Future, str] = {}
    total, count = len(pending), 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        while pending or running:
            ready = [name for name in pending if all(n in done for n in needs[name])]
            for name in ready[: jobs - len(running)]:
                if before_start is not None:
                    before_start(name)
                running[pool.submit(work, *arguments(name))] = name
                pending.remove(name)
            if not running:
                raise ValueError(f"tasks wait on each other in a circle: {sorted(pending)}")
            complete, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in complete:
                name = running.pop(future)
                seconds = future.result()
                done.add(name)
                count += 1
                tqdm.write(f"[{count}/{total}] {name} finished in {seconds:.0f} s")
