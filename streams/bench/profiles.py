"""pyinstrument profiles (a dev extra) of the benchmark's paths: a call tree as text and the
sampled time per package (faust, aiokafka, asyncio, the detectors...), which says at a glance
where a path's time goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_PARTS = ("streams", "models", "schemas")


def group_of(file_path: str | None) -> str:
    """A frame's package: `faust`, `aiokafka`, `asyncio`, `models/detectors`, `streams/worker`..."""
    if not file_path:
        return "<native>"
    parts = Path(file_path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for i, part in enumerate(parts):
        if part in REPO_PARTS and i + 1 < len(parts):
            nxt = parts[i + 1]
            return f"{part}/{nxt}" if not nxt.endswith(".py") else f"{part}/{nxt[:-3]}"
    if "python3.11" in parts:
        rest = parts[parts.index("python3.11") + 1 :]
        return rest[0].removesuffix(".py") if rest else "<stdlib>"
    if file_path.startswith("<"):
        return file_path
    return Path(file_path).stem


def by_package(session: Any) -> list[tuple[str, float]]:
    """Sampled seconds per package (time of the leaf frames: where the samples landed)."""
    totals: dict[str, float] = {}
    root = session.root_frame()
    if root is None:
        return []
    stack = [(root, "<native>")]
    while stack:
        frame, parent = stack.pop()
        # synthetic leaves ("[self]", "[await]") and built-ins belong to their caller
        path = frame.file_path
        group = parent if not path or path.startswith(("<built-in", "<frozen")) else group_of(path)
        if frame.children:
            stack.extend((child, group) for child in frame.children)
        else:
            totals[group] = totals.get(group, 0.0) + frame.time
    return sorted(totals.items(), key=lambda kv: -kv[1])


def write_report(session: Any, path: Path) -> list[tuple[str, float]]:
    """The call tree (library frames shown, frames under 1% pruned) and, first, the time per
    package; returns the latter."""
    from pyinstrument.renderers import ConsoleRenderer

    renderer = ConsoleRenderer(
        unicode=True,
        color=False,
        show_all=True,
        processor_options={"filter_threshold": 0.01},
    )
    packages = by_package(session)
    total = sum(t for _, t in packages) or 1.0
    head = [f"sampled time per package (of {total:.2f}s, {session.cpu_time:.2f}s CPU):"]
    head += [f"  {t:8.3f}s {t / total:6.1%}  {name}" for name, t in packages[:25]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head) + "\n\n" + renderer.render(session), encoding="utf-8")
    return packages


def profile_call(path: Path, fn: Callable[[], Any]) -> list[tuple[str, float]]:
    """Run fn under pyinstrument; write the report to `path`; the time per package (empty
    when pyinstrument is not installed)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return []
    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        fn()
    finally:
        session = profiler.stop()
    return write_report(session, path)


def report_from_file(session_file: Path, path: Path) -> list[tuple[str, float]]:
    """Render a `.pyisession` written by `pyinstrument -r pyisession` (the live worker)."""
    from pyinstrument.session import Session

    if not session_file.exists():
        return []
    return write_report(Session.load(str(session_file)), path)
