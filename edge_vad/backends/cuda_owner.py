"""One thread that owns a current CUDA context; other threads hand it work and wait for the result.

    owner = OwnerThread(driver, name="trt-coarse_backbone").start()   # attaches the primary context there
    result = owner.call(fn, *args)        # runs fn on the owner thread, from any thread; exceptions re-raised
    owner.stop()                          # detaches and joins

Why a thread and not a push/pop around every call: TensorRT documents that one IExecutionContext must not
be used from several threads at once and that its enqueue runs on the CUDA context current on the calling
thread; the pipelines run one thread per camera. With one owner thread per engine every CUDA and TensorRT
call of that engine happens on one thread with its context current, in submission order, and the pipeline
threads never touch CUDA. The owner runs `fn` directly when it calls itself (TensorRT's int8 calibrator
calls back into our code on the building thread), so nesting never deadlocks.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional, Tuple

from edge_vad.backends.cuda_driver import CudaDriver
from edge_vad.errors import EdgeVadError

log = logging.getLogger(__name__)

_STOP = object()


class OwnerThread:
    """A daemon thread with `driver`'s primary context current, running submitted calls in order."""

    def __init__(self, driver: CudaDriver, name: str = "cuda-owner") -> None:
        self.driver = driver
        self.name = name
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._started = threading.Event()
        self._start_error: Optional[BaseException] = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "OwnerThread":
        if self._thread is not None:
            raise EdgeVadError(f"internal: owner thread {self.name} started twice")
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        return self

    def _main(self) -> None:
        try:
            self.driver.attach()
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                fn, args, kwargs, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    future.set_exception(exc)
        finally:
            try:
                self.driver.detach()
            except Exception as exc:  # noqa: BLE001 - shutting down: report, never mask the real error
                log.warning("%s: releasing the CUDA context failed: %s", self.name, exc)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) on the owner thread; its exception is raised here."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        if not self.alive:
            raise EdgeVadError(f"internal: CUDA owner thread {self.name} is not running")
        future: "Future[Any]" = Future()
        item: Tuple[Any, ...] = (fn, args, kwargs, future)
        self._queue.put(item)
        return future.result()

    def stop(self) -> None:
        """Finish the queued calls, detach the context and join (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            return
        if threading.current_thread() is self._thread:
            raise EdgeVadError(f"internal: owner thread {self.name} cannot stop itself")
        self._queue.put(_STOP)
        self._thread.join()
