"""What the benchmarks share: cheap long footage, resident-memory sampling, the load average."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def looped_clip(path: Path, frames_dir: Path, seconds: float, fps: int = 10) -> Path:
    """An mp4 of ``seconds`` at ``fps`` (H.264, ultrafast) cycling through a frame folder forwards then backwards
    (the loop has no jump where it starts again)."""
    import av
    import cv2

    images = [cv2.imread(str(p))[..., ::-1].copy() for p in sorted(frames_dir.iterdir())]
    height, width = images[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(int(seconds * fps)):
            k = i % (2 * len(images) - 2)
            image = images[k if k < len(images) else 2 * len(images) - 2 - k]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class PeakRss:
    """The largest resident memory (MB) seen while the block runs, sampled every ``every_s`` seconds: of this
    process, or with ``children`` of the largest of its child processes (worker pools)."""

    def __init__(self, children: bool = False, every_s: float = 0.2) -> None:
        self.children, self.every_s, self.peak = children, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        import psutil

        if not self.children:
            return rss_mb()
        sizes = []
        for child in psutil.Process().children(recursive=True):
            try:
                sizes.append(child.memory_info().rss / 2**20)
            except psutil.Error:
                continue
        return max(sizes, default=0.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())
