"""Several gateway worker processes on one port: ``PYFAAS_GATEWAY_WORKERS`` > 1.

:func:`app.main` calls :func:`run_workers`, which stays in the parent as a small
supervisor. Each worker binds the port itself with ``SO_REUSEPORT``, so the kernel
spreads connections across them with no hand-off through the parent; a worker that dies
is started again. Each worker has its own route cache (kept true by the same events), its
own keep-alive pool and its own access aggregation. The parent points
``PROMETHEUS_MULTIPROC_DIR`` at a directory of its own before any worker starts, so
``/metrics`` on any worker reports the sum of all of them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from .settings import GatewaySettings

log = logging.getLogger(__name__)

STOP_GRACE = 15.0


def _worker(index: int) -> None:
    from pyfaas_common.logs import setup_logging

    from .app import serve

    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level)
    serve(settings, reuse_port=True)


def run_workers(settings: GatewaySettings) -> None:
    metrics_dir = tempfile.mkdtemp(prefix="pyfaas-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Spawned, not forked: a worker starts with nothing of the parent's state (no loop,
    # no sockets), and prometheus_client reads the directory when it is first imported.
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(index: int) -> BaseProcess:
        process = context.Process(target=_worker, args=(index,), name=f"gateway-worker-{index}")
        process.start()
        return process

    workers = {index: start(index) for index in range(settings.gateway_workers)}
    try:
        while not stopping:
            wait([p.sentinel for p in workers.values()], timeout=0.5)
            for index, process in list(workers.items()):
                if process.is_alive() or stopping:
                    continue
                log.warning(
                    "gateway worker exited; starting it again",
                    extra={"worker": index, "code": process.exitcode},
                )
                _dead(process)
                time.sleep(0.5)  # a worker that cannot start must not spin the CPU
                workers[index] = start(index)
    finally:
        for process in workers.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            _dead(process)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _dead(process: BaseProcess) -> None:
    from prometheus_client import multiprocess

    if process.pid is not None:
        multiprocess.mark_process_dead(process.pid)
