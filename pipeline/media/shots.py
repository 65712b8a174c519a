"""Render one shot (a still or a Ken Burns move, with captions and fades) to a video-only mp4.

Each shot is an independent, cacheable clip with exactly ``frames`` frames. All shots share
:data:`~pipeline.media.ffmpeg.VIDEO_ENCODE_ARGS`, so their SPS/PPS are identical and the
episode is joined with the concat demuxer and ``-c copy``.

Ken Burns method (measured on 2 cores, 360 frames of 1280x720): the still is covered at 2x
the render size, converted to yuv420p and decoded once, looped, and ``zoompan`` (one output
frame per input frame) crops and scales each frame to the render size: 3.1-3.3 s, of which
x264 is most; residual jitter ~0.7 px because the window moves in whole *source* pixels.

Rejected: ``scale`` with ``eval=frame`` to the zoomed size, then a fixed ``crop``. It was as
fast and as smooth, but not deterministic: ``crop`` keeps the frame size it was configured
with, so once the frames shrink (a pull-out) it reads past the picture into uninitialised
memory, and repeated renders of the same shot differed in their last frames. ``zoompan`` from
a 1.15x source judders by up to 2.5 px; ``perspective`` (sub-pixel) was slowest (3.9 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from pipeline.errors import MediaError
from pipeline.media.ffmpeg import FILTER_THREAD_ARGS, SWS_FLAGS, VIDEO_ENCODE_ARGS, media_url, run_ffmpeg
from pipeline.media.files import atomic_output

ShotKind = Literal["still", "ken_burns"]

#: Scale for ``stills.cover_image`` of Ken Burns pictures: ``zoompan`` moves its window in whole
#: source pixels, so a 2x source halves the step seen in the frame (and covers zooms up to 2).
KEN_BURNS_HEADROOM = 2.0

#: Gap between a caption strip and the bottom edge, as a fraction of the frame height.
CAPTION_BOTTOM_MARGIN = 0.06


@dataclass(frozen=True)
class CaptionCue:
    """A caption PNG shown for shot-local frames [start_frame, end_frame)."""

    start_frame: int
    end_frame: int
    image: Path


@dataclass(frozen=True)
class ShotSpec:
    """Everything that determines a shot's pixels; equal specs render to identical bytes.

    ``pan`` is the direction the view travels, each component in [-1, 1]: (1, 0) moves from
    the left edge of the available slack to the right edge, (0, 0) stays centred. Zoom is a
    magnification >= 1 relative to the render size; with zoom 1 there is no slack to pan in.
    ``fade_in``/``fade_out`` are frames from/to black at the start/end of the shot.
    """

    kind: ShotKind
    image: Path
    frames: int
    fps: int
    width: int
    height: int
    zoom_from: float = 1.0
    zoom_to: float = 1.0
    pan: tuple[float, float] = (0.0, 0.0)
    captions: tuple[CaptionCue, ...] = ()
    fade_in: int = 0
    fade_out: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in ("still", "ken_burns"):
            problems.append(f"kind {self.kind!r} is not 'still' or 'ken_burns'")
        if self.frames < 1 or self.fps < 1:
            problems.append(f"frames {self.frames} and fps {self.fps} must be >= 1")
        if self.width < 2 or self.height < 2 or self.width % 2 or self.height % 2:
            problems.append(f"size {self.width}x{self.height} must be even (yuv420p)")
        if min(self.zoom_from, self.zoom_to) < 1.0:
            problems.append(f"zoom {self.zoom_from}->{self.zoom_to} must be >= 1")
        if any(not -1.0 <= p <= 1.0 for p in self.pan):
            problems.append(f"pan {self.pan} components must be in [-1, 1]")
        if self.fade_in < 0 or self.fade_out < 0 or self.fade_in + self.fade_out > self.frames:
            problems.append(f"fades {self.fade_in}+{self.fade_out} must fit in {self.frames} frames")
        for cue in self.captions:
            if not 0 <= cue.start_frame < cue.end_frame <= self.frames:
                problems.append(f"caption frames [{cue.start_frame}, {cue.end_frame}) outside [0, {self.frames})")
        if problems:
            raise ValueError("invalid ShotSpec: " + "; ".join(problems))


def _motion_filters(spec: ShotSpec) -> list[str]:
    """``zoompan`` over the 2x picture: zoom and window position as functions of the frame number."""
    last = max(spec.frames - 1, 1)
    zoom = f"{spec.zoom_from!r}+({spec.zoom_to!r}-{spec.zoom_from!r})*on/{last}"
    # The window runs from one end of the slack to the other along `pan`; the slack is
    # recomputed from the current zoom, so the window never leaves the picture.
    x = f"(iw-iw/zoom)*(0.5+{spec.pan[0] / 2!r}*(2*on/{last}-1))"
    y = f"(ih-ih/zoom)*(0.5+{spec.pan[1] / 2!r}*(2*on/{last}-1))"
    return [f"zoompan=z='{zoom}':x='{x}':y='{y}':d=1:s={spec.width}x{spec.height}:fps={spec.fps}"]


def build_filtergraph(spec: ShotSpec) -> str:
    """Return the ``-filter_complex`` graph for ``spec``: input 0 is the image, 1.. the captions."""
    prepare = (
        f"scale={spec.width}:{spec.height}:flags={SWS_FLAGS}:out_color_matrix=bt709:out_range=tv"
        if spec.kind == "still"
        else f"scale=out_color_matrix=bt709:out_range=tv:flags={SWS_FLAGS}"
    )
    chain = [
        prepare,
        "format=yuv420p",
        f"loop=loop={spec.frames - 1}:size=1:start=0",
        f"setpts=N/{spec.fps}/TB",
    ]
    if spec.kind == "ken_burns":
        chain += _motion_filters(spec)
    # Each stage is (extra input pads, filter chain); labels are threaded through below.
    stages = [("", ",".join(chain))]
    for index, cue in enumerate(spec.captions, start=1):
        with Image.open(cue.image) as strip:
            strip_height = strip.height
        y = spec.height - strip_height - round(spec.height * CAPTION_BOTTOM_MARGIN)
        gate = f"between(n,{cue.start_frame},{cue.end_frame - 1})"
        stages.append((f"[{index}:v]", f"overlay=x=(W-w)/2:y={y}:eof_action=repeat:enable='{gate}'"))
    fades = []
    if spec.fade_in:
        fades.append(f"fade=t=in:s=0:n={spec.fade_in}")
    if spec.fade_out:
        fades.append(f"fade=t=out:s={spec.frames - spec.fade_out}:n={spec.fade_out}")
    if fades:
        stages.append(("", ",".join(fades)))
    parts, previous = [], "[0:v]"
    for number, (extra, filters) in enumerate(stages):
        label = "[out]" if number == len(stages) - 1 else f"[s{number}]"
        parts.append(f"{previous}{extra}{filters}{label}")
        previous = label
    return ";".join(parts)


def render_shot(spec: ShotSpec, out_path: Path) -> None:
    """Render ``spec`` to a video-only H.264 mp4 at ``out_path`` with exactly ``spec.frames`` frames.

    The still is decoded once and repeated with the ``loop`` filter (4-5x faster than
    ``-loop 1``, which decodes the PNG every frame). The file appears atomically.
    """
    for path in (spec.image, *(cue.image for cue in spec.captions)):
        if not Path(path).is_file():
            raise MediaError(f"render shot: input image {path} does not exist")
    inputs = ["-i", media_url(spec.image)]
    for cue in spec.captions:
        inputs += ["-i", media_url(cue.image)]
    with atomic_output(out_path) as tmp:
        run_ffmpeg(
            [
                *FILTER_THREAD_ARGS,
                *inputs,
                "-filter_complex", build_filtergraph(spec),
                "-map", "[out]",
                "-frames:v", str(spec.frames),
                "-r", str(spec.fps),
                *VIDEO_ENCODE_ARGS,
                "-f", "mp4",
                media_url(tmp),
            ],
            f"render {spec.kind} shot {out_path.name}",
        )  # fmt: skip
