"""Process set-up every entry point gets on import of ``wildsci``: glibc malloc that keeps freed memory.

Why: glibc hands large freed blocks back to the kernel (``munmap`` above the mmap threshold, heap trimming above
the trim threshold). On a virtual machine that reclaims freed guest pages (Firecracker with free-page reporting,
as on the kit's CPU VMs), generation then faults the same pages in again at every KV-cache reallocation: a third
to a half of the CPU time went to the kernel (bench/RESULTS.md ``malloc_tunables``). The Makefile exported
``MALLOC_*`` for its own targets only, so ``wildsci build`` typed in a shell ran without them; setting them here,
with ``mallopt`` in the running process, gives every entry point (``wildsci``, ``python -m wildsci.grpo`` under
``accelerate launch``, ``python space/app.py``) the same allocator, and the exported variables give it to the
processes they start (lighteval, a vLLM server, accelerate's workers). ``bench/malloc_entrypoint.py`` measures a
``wildsci build`` typed in a shell with and without it, against the Makefile's variables.

Guarded: Linux with glibc only (``mallopt`` is glibc's; musl and macOS are left alone); a variable the user set
wins (glibc read it at start-up already); ``WILDSCI_MALLOC_TUNING=0`` turns it all off.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc's environment variables and the values the Makefile exports (32 MiB is the most the mmap threshold takes)
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": 33554432,
    "MALLOC_TRIM_THRESHOLD_": 17179869184,
    "MALLOC_TOP_PAD_": 1073741824,
}
#: ``mallopt`` parameter numbers (malloc.h): M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_THRESHOLD -3
_MALLOPT_PARAM = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}
#: ``mallopt`` takes a C int: 16 GiB of trim threshold becomes the largest int (2 GiB), still above any freed top
_INT_MAX = 2**31 - 1
OFF_SWITCH = "WILDSCI_MALLOC_TUNING"


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only: musl has mallopt but not this
        return libc
    except (OSError, AttributeError):
        return None


def tune_malloc() -> dict[str, int]:
    """Apply the Makefile's malloc settings to this process and export them to its children.

    Returns what this call applied with ``mallopt`` (empty when off, not glibc, or every variable was already set).
    """
    if os.environ.get(OFF_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    applied = {}
    for name, value in MALLOC_ENV.items():
        if os.environ.get(name):
            continue  # the user's own value: glibc applied it when the process started
        if libc.mallopt(ctypes.c_int(_MALLOPT_PARAM[name]), ctypes.c_int(min(value, _INT_MAX))) == 1:
            applied[name] = min(value, _INT_MAX)
        os.environ[name] = str(value)  # children start with it (glibc reads it before any of their code runs)
    return applied
