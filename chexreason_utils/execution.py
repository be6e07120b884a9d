"""How the runner executes one notebook: papermill's nbclient engine, with three changes.

- A hook on every cell start, so the runner's progress watcher can say which cell is running.
- The kernel talks to papermill over IPC sockets (files in Jupyter's runtime folder) instead of TCP
  ports on localhost: ipykernel warns "Kernel is running over TCP without encryption" for TCP only.
  jupyter_client names them ``kernel-ipc-<n>`` in the working directory (the notebook folder) by default, so two
  runs that start a kernel at the same moment there take the same sockets and one kernel never answers; each
  kernel gets socket names of its own instead.
- Each kernel is stopped at once after its last cell (nbclient's ``shutdown_kernel="immediate"``): a graceful
  shutdown waits about 2 s for an interpreter holding torch to tear down, and by then every output is written and
  closed; the kernel's worker processes end with it (``jobs.die_with_parent``).
"""
from __future__ import annotations

import os
import uuid
from typing import Callable

from jupyter_client import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir
from papermill.engines import NBClientEngine, papermill_engines
from traitlets import default

ENGINE = "chexreason"


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels listen on IPC sockets."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        """A socket path prefix of this kernel's own in Jupyter's runtime folder (the ports are appended)."""
        folder = jupyter_runtime_dir()
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"chexreason-{uuid.uuid4().hex[:12]}-ipc")


class CellHookEngine(NBClientEngine):
    """papermill's default engine, calling ``on_cell(number, count, source)`` as each cell starts (from 1), on
    ``IPCKernelManager`` kernels stopped at once after the last cell."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, on_cell: Callable | None = None, **kwargs):
        if on_cell is not None:
            cell_start = nb_man.cell_start

            def announce(cell, cell_index=None, **kw):
                on_cell(cell_index + 1, len(nb_man.nb.cells), cell.source)
                return cell_start(cell, cell_index, **kw)

            nb_man.cell_start = announce
        return super().execute_managed_notebook(nb_man, kernel_name, kernel_manager_class=IPCKernelManager,
                                                shutdown_kernel="immediate", **kwargs)


papermill_engines.register(ENGINE, CellHookEngine)
