"""The one place that knows how to run ffmpeg, and the encoder settings every clip shares.

Everything here exists for reproducibility: one pinned binary (imageio-ffmpeg's, unless an
operator points ``CINEFLEET_FFMPEG`` elsewhere), its version line in every cache key, and one
set of encoder arguments so identical inputs give identical bytes on any machine and with any
number of parallel workers (see shared/research/video.md, section 2).
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
from pathlib import Path

import imageio_ffmpeg

from pipeline.errors import MediaError
from pipeline.media.processes import die_with_parent

#: Threads for x264 and for filter graphs. Fixed, never derived from the CPU or worker count:
#: the x264 thread count is written into the stream's SEI, so a different number changes bytes.
THREADS = 2

#: Video encoder arguments shared by every shot. Identical settings keep the SPS/PPS identical,
#: which is what lets the concat demuxer join shots with ``-c copy``. ``cpu-independent=1``
#: makes the SIMD build emit the C reference output (no speed cost, measured); the colour tags
#: make the VUI explicit instead of inherited from whatever the input happened to carry.
VIDEO_ENCODE_ARGS: tuple[str, ...] = (
    "-c:v", "libx264",
    "-preset", "veryfast",
    "-crf", "23",
    "-pix_fmt", "yuv420p",
    "-threads", str(THREADS),
    "-x264-params", "cpu-independent=1",
    "-color_range", "tv",
    "-colorspace", "bt709",
    "-color_primaries", "bt709",
    "-color_trc", "bt709",
    "-fflags", "+bitexact",
    "-flags:v", "+bitexact",
    "-map_metadata", "-1",
    "-an",
)  # fmt: skip

#: Filter-graph threading, pinned for the same reason as :data:`THREADS`.
FILTER_THREAD_ARGS: tuple[str, ...] = (
    "-filter_threads", str(THREADS),
    "-filter_complex_threads", str(THREADS),
)  # fmt: skip

#: swscale flags for every resize and colour conversion: ``accurate_rnd+bitexact`` makes the
#: SIMD paths produce the C reference output, so the bytes do not depend on the CPU.
SWS_FLAGS = "bicubic+accurate_rnd+bitexact"

_STDERR_TAIL_LINES = 12


def ffmpeg_path() -> str:
    """Return the ffmpeg binary to use: ``$CINEFLEET_FFMPEG`` if set, else imageio-ffmpeg's."""
    override = os.environ.get("CINEFLEET_FFMPEG")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise MediaError(f"CINEFLEET_FFMPEG={override!r} is not an executable file")
        return override
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise MediaError(f"no ffmpeg binary: {exc}") from exc


@functools.cache
def build_id() -> str:
    """Return the first line of ``ffmpeg -version``; different builds encode different bytes."""
    out = _run(["-version"], "read the ffmpeg version", query=True).stdout
    return out.decode("utf-8", "replace").splitlines()[0].strip()


def stderr_tail(stderr: str | bytes, lines: int = _STDERR_TAIL_LINES) -> str:
    """Return the last non-empty lines of a tool's stderr, for error messages."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    kept = [line for line in stderr.splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(no output)"


def _run(args: list[str], purpose: str, *, query: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg; a ``query`` (``-version``) goes as itself, any other command with the options every
    encode shares (no banner, never read stdin, overwrite), which a query has no use for."""
    cmd = [ffmpeg_path(), *args] if query else [ffmpeg_path(), "-hide_banner", "-nostdin", "-y", *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                              preexec_fn=die_with_parent())  # killed with its caller
    except OSError as exc:
        raise MediaError(f"{purpose}: cannot start ffmpeg: {exc}") from exc
    if proc.returncode != 0:
        full = full_volume(args, proc.stderr)
        if full is not None:
            raise MediaError(f"{purpose}: {full}")
        raise MediaError(f"{purpose}: ffmpeg exited {proc.returncode}: {stderr_tail(proc.stderr)}")
    return proc


def full_volume(args: list[str], stderr: bytes) -> str | None:
    """"No space left on device on MOUNT (writing PATH)" when ffmpeg failed for want of space, else None.

    ffmpeg reports a full disk in the middle of its output (x264's statistics come last), so
    its last lines would hide the cause; the operator needs the full volume's name to free it.
    """
    outputs = [Path(arg.removeprefix("file:")) for arg in args if arg.startswith("file:/")]
    target = outputs[-1] if outputs else None  # ffmpeg's output is its last file argument
    said = b"No space left on device" in stderr
    if target is None:
        return "No space left on device" if said else None
    folder = target.parent
    if not said:
        try:
            stats = os.statvfs(folder)
        except OSError:
            return None
        if stats.f_bavail > 0:
            return None
    return f"No space left on device on {mount_point(folder)} (writing {target})"


def disk_full(error: OSError, fallback: Path) -> str | None:
    """"No space left on device on MOUNT (writing PATH)" for a full disk or quota, else None.

    Python's own message names only the file; an operator freeing space needs the volume.
    """
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = Path(error.filename) if isinstance(error.filename, str) else fallback
    return f"No space left on device on {mount_point(where)} (writing {where})"


def mount_point(path: Path) -> Path:
    """The mount point of the volume holding ``path`` (the nearest existing ancestor's)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def run_ffmpeg(args: list[str], purpose: str) -> str:
    """Run ffmpeg with ``args`` (no shell) and return its stderr; raise MediaError on failure.

    ``purpose`` says what the command was for, so an operator reading the error knows which
    step broke without decoding the argument list; the error carries ffmpeg's last lines.
    """
    return _run(args, purpose).stderr.decode("utf-8", "replace")


def read_ffmpeg_stdout(args: list[str], purpose: str) -> bytes:
    """Run ffmpeg like :func:`run_ffmpeg` but return its stdout (decoded PCM, framemd5 lines)."""
    return _run(args, purpose).stdout


def media_url(path: Path) -> str:
    """Return ``path`` as an ffmpeg input/output argument that cannot be read as an option.

    ffmpeg treats an argument starting with '-' as an option and one with ':' as a protocol;
    an absolute ``file:`` URL is neither.
    """
    return "file:" + str(Path(path).resolve())
