"""Join rendered shots and the episode audio into the final mp4, without re-encoding.

Every shot shares the encoder settings, so the concat demuxer can join them with ``-c copy``
frame-exactly (each shot starts on an IDR frame and where the previous one ends), and the
audio was encoded once for the whole episode, so there are no AAC joins (video.md section 4).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.errors import MediaError
from pipeline.media.ffmpeg import media_url, run_ffmpeg
from pipeline.media.files import atomic_output


def concat_list(clips: list[Path]) -> str:
    """Return an ffconcat script naming ``clips`` by absolute path.

    Paths are single-quoted; a quote inside one is written as ``'\\''`` (close, escaped
    quote, reopen), the concat demuxer's own escaping. Newlines cannot be escaped at all.
    """
    lines = ["ffconcat version 1.0"]
    for clip in clips:
        path = str(Path(clip).resolve())
        if "\n" in path or "\r" in path:
            raise MediaError(f"assemble: clip path {path!r} contains a line break")
        escaped = path.replace("'", "'\\''")
        lines.append(f"file '{escaped}'")
    return "\n".join(lines) + "\n"


def assemble_episode(clips: list[Path], audio: Path, out_path: Path) -> None:
    """Concatenate video-only ``clips`` and mux ``audio`` into ``out_path`` (atomic).

    ``+faststart`` puts the index first so the preview plays while it downloads; bitexact
    flags and dropped metadata/chapters keep the file a pure function of its inputs.
    """
    if not clips:
        raise MediaError("assemble: no clips to join")
    for path in (*clips, audio):
        if not Path(path).is_file():
            raise MediaError(f"assemble: input {path} does not exist")
    # Beside the output (a stage's scratch folder), so a killed process leaves it where it is swept.
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".concat-", dir=Path(out_path).parent) as tmp:
        listing = Path(tmp) / "clips.ffconcat"
        listing.write_text(concat_list(clips), encoding="utf-8")
        with atomic_output(out_path) as target:
            run_ffmpeg(
                [
                    "-f", "concat", "-safe", "0", "-i", media_url(listing),
                    "-i", media_url(audio),
                    "-map", "0:v:0", "-map", "1:a:0",
                    "-c", "copy",
                    "-movflags", "+faststart",
                    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
                    "-map_metadata", "-1", "-map_chapters", "-1",
                    "-f", "mp4", media_url(target),
                ],
                f"assemble {len(clips)} clips and audio into {Path(out_path).name}",
            )  # fmt: skip
