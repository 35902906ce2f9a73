"""A process's own memory, as the benchmarks measure it (Linux ``/proc``): the one reader the
memory benchmarks share.

``status()`` reads ``/proc/self/status``'s sizes in bytes (``VmRSS``, the resident set now;
``VmHWM``, its peak; ``RssAnon``/``RssFile``, its anonymous and file-backed parts);
``reset_peak()`` sets ``VmHWM`` back to the present RSS (``/proc/self/clear_refs``), so the next
peak read is that of what runs after it. ``pss()`` is the proportional set size
(``/proc/self/smaps_rollup``: a file's pages counted once over the processes that map them)."""

from __future__ import annotations

KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def status() -> dict[str, int]:
    """The process's memory sizes in bytes, by ``/proc/self/status``'s names (:data:`KEYS`)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in KEYS:
                out[key] = int(rest.split()[0]) * 1024  # the file says kB
    return out


def reset_peak() -> None:
    """Reset ``VmHWM`` to the present RSS: a later ``status()["VmHWM"]`` is the peak since now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def pss() -> int:
    """The process's proportional set size in bytes (``Pss`` of ``/proc/self/smaps_rollup``)."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0
