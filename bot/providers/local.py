"""The offline preview renderer behind the provider contract (provider `local`).

Not AI generation: it animates the reference images so the whole pipeline — submit, poll, download,
deliver — runs with no key and no network. It costs nothing, so a render lost in a restart is simply
rendered again from the handle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bot.media.render import RenderSpec, render_preview
from bot.providers.base import Capabilities, ErrorCode, Provider, ProviderError, TaskHandle, TaskState, TaskStatus
from bot.request import GenerationRequest

PREVIEW_NOTICE = "Preview render (local) — not AI-generated."


class _Cancelled(Exception):
    """Raised inside the render thread's progress callback to stop it between frames."""


@dataclass
class _Render:
    task: asyncio.Task[None]
    progress: float = 0.0
    cancelled: bool = False


class LocalProvider(Provider):
    name = "local"
    display_name = "the local preview renderer"
    is_preview = True
    capabilities = Capabilities(
        tiers=frozenset({"standard", "pro", "4k"}),
        elements="inline",
        start_end_frame=True,
        multi_prompt="list",
        cancel="any",
    )

    _renders: dict[str, _Render]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._renders = {}

    @property
    def _out_dir(self) -> Path:
        return self.settings.data_dir / "local-renders"

    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        images = [m.path for m in request.images]
        for element in request.elements:
            images += [m.path for m in (element.frontal, *element.references) if m is not None]
        images += [m.path for m in (request.start_frame, request.end_frame) if m is not None]
        spec = {
            "images": images,
            "video": request.video.path if request.video else None,
            "prompt": request.caption,
            "aspect_ratio": request.aspect_ratio,
            "duration_s": request.duration,
            "sound": request.sound,
            "keep_original_sound": request.keep_original_sound,
        }
        handle = TaskHandle(provider=self.name, task_id=f"local-{job_id}", extra={"spec": spec})
        self._start(handle)
        return handle

    def _output(self, handle: TaskHandle) -> Path:
        return self._out_dir / f"{handle.task_id}.mp4"

    def _start(self, handle: TaskHandle) -> _Render:
        raw = dict(handle.extra["spec"])
        spec = RenderSpec(
            images=tuple(Path(p) for p in raw["images"]),
            video=Path(raw["video"]) if raw["video"] else None,
            prompt=raw["prompt"],
            aspect_ratio=raw["aspect_ratio"],
            duration_s=int(raw["duration_s"]),
            sound=bool(raw["sound"]),
            keep_original_sound=bool(raw["keep_original_sound"]),
        )
        out = self._output(handle)
        out.parent.mkdir(parents=True, exist_ok=True)
        state: _Render

        def report(fraction: float) -> None:
            if state.cancelled:
                raise _Cancelled  # the renderer stops cleanly and leaves no file behind
            state.progress = fraction

        task = asyncio.create_task(asyncio.to_thread(render_preview, spec, out, report), name=handle.task_id)
        # A cancelled render ends with _Cancelled; collect it so it is not reported as an unhandled error.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        state = _Render(task)
        self._renders[handle.task_id] = state
        return state

    async def poll(self, handle: TaskHandle) -> TaskState:
        render = self._renders.get(handle.task_id)
        out = self._output(handle)
        if render is None:
            if out.exists():
                return TaskState(TaskStatus.SUCCEEDED, progress=1.0, output_url=out.resolve().as_uri())
            render = self._start(handle)  # lost in a restart: free to render again
        if not render.task.done():
            return TaskState(TaskStatus.RUNNING, progress=render.progress)
        if render.cancelled or render.task.cancelled():
            return TaskState(TaskStatus.CANCELED)
        failure = render.task.exception()
        if failure is not None:
            error = ProviderError(ErrorCode.INVALID_INPUT, f"rendering failed: {failure}", provider=self.name)
            return TaskState(TaskStatus.FAILED, error=error)
        return TaskState(TaskStatus.SUCCEEDED, progress=1.0, output_url=out.resolve().as_uri())

    async def wait_for_change(self, handle: TaskHandle, timeout: float) -> None:
        render = self._renders.get(handle.task_id)
        if render is None or render.task.done():
            return
        # Wake for progress every second, and at once when the render ends.
        await asyncio.wait({render.task}, timeout=min(timeout, 1.0))

    async def cancel(self, handle: TaskHandle) -> bool:
        render = self._renders.get(handle.task_id)
        if render is None or render.task.done():
            return False
        render.cancelled = True
        return True
