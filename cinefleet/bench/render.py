"""``cinefleet bench render``: how fast a 10-minute reference episode renders, cold and warm.

The reference episode has 40 shots of about 15 s at 1280x720, 24 fps: 20 establishing shots
with Ken Burns motion and 20 dialogue close-ups, all captioned, voiced when espeak-ng is
installed, over a music bed. The floor is one ffmpeg encode of the same frames (decode the
finished episode's video and encode it again with the same encoder settings), measured in the
same run, so the ratio says how much the pipeline costs beyond the unavoidable encode.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline.media.ffmpeg import VIDEO_ENCODE_ARGS, run_ffmpeg
from pipeline.render import RenderRequest, render

LOCATIONS = ("quay", "market", "lighthouse", "cliffs")
#: One character per location, so every beat agrees with the canon about where people are.
CHARACTERS = (("ada", "Ada Quill", "en-gb"), ("bram", "Bram Hale", "en-us"), ("cora", "Cora Lind", "en-gb+f3"),
              ("dov", "Dov Marsh", "en-us+m3"))
ACTION = (
    "Rain sweeps across the {place} while gulls circle low over the grey water and the old boats "
    "knock against the pilings, ropes creaking, lanterns swinging, and far off a bell rings twice "
    "as the tide turns and the wind picks up from the west."
)
LINE = (
    "Line {n}: we have to reach the {place} before the tide turns tonight, so pack the lamps, "
    "check the ropes twice, and tell the others we leave the moment the bell rings."
)


def _image(path: Path, size: tuple[int, int], hue: int) -> None:
    image = Image.new("RGB", size, (hue % 256, (hue * 3) % 256, (hue * 7) % 256))
    draw = ImageDraw.Draw(image)
    for i in range(0, size[0], 40):
        draw.line([(i, 0), (size[0] - i, size[1])], fill=((hue + i) % 256, 80, 160), width=3)
    draw.ellipse([size[0] // 3, size[1] // 4, size[0] // 3 * 2, size[1] // 4 * 3], outline=(255, 240, 200), width=8)
    image.save(path, optimize=False, compress_level=6)


def reference_project(folder: Path, shots: int = 40) -> Path:
    """Write the reference project and its asset library into ``folder``; return the project."""
    assets = folder / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    license = {"license_type": "generated_local", "provider_or_model": "cinefleet bench",
               "retrieval_date": "2026-11-21"}
    library = []
    for n, place in enumerate(LOCATIONS):
        _image(assets / f"bg_{place}.png", (1920, 1080), 40 * n + 17)
        library.append({"id": f"bg_{place}", "kind": "background", "file": f"bg_{place}.png", "license": license})
    for n, (cid, _, _) in enumerate(CHARACTERS):
        _image(assets / f"char_{cid}.png", (1080, 1080), 90 * n + 51)
        library.append({"id": f"char_{cid}", "kind": "character", "file": f"char_{cid}.png", "license": license})
    (assets / "library.json").write_text(json.dumps({"schema_version": "1.0.0", "assets": library}, indent=2))
    beats = []
    for n in range(shots // 2):
        place = LOCATIONS[n % len(LOCATIONS)]
        cid = CHARACTERS[n % len(LOCATIONS)][0]
        beats.append({
            "id": f"beat-{n:02d}", "summary": f"Beat {n} at the {place}.", "location_id": place,
            "characters": [cid], "actions": [ACTION.format(place=place)],
            "dialogue": [{"speaker_id": cid, "text": LINE.format(n=n, place=place)}],
        })
    project = {
        "schema_version": "1.0.0", "id": "bench-reference", "title": "Reference episode",
        "premise": "A harbour town prepares for a storm.",
        "target_duration": {"seconds": 15.7 * shots, "tolerance": 0.1},
        "episode": {"schema_version": "1.0.0", "episode_number": 1},
        "canon": {
            "schema_version": "1.0.0",
            "characters": [{"id": cid, "name": name, "age": 40, "status": "alive", "location_id": place,
                            "voice": voice} for (cid, name, voice), place in zip(CHARACTERS, LOCATIONS, strict=True)],
            "locations": [{"id": place, "name": place.title()} for place in LOCATIONS],
        },
        "beats": beats,
        "music": {"enabled": True, "mood": "tense"},
    }
    path = folder / "project.json"
    path.write_text(json.dumps(project, indent=2))
    return path


def _edit_one_line(project: Path) -> None:
    data = json.loads(project.read_text())
    line = data["beats"][7]["dialogue"][0]
    line["text"] = line["text"].replace("pack the lamps", "bring the lamps")
    project.write_text(json.dumps(data, indent=2))


def _floor(episode: Path, scratch: Path) -> float:
    began = time.perf_counter()
    run_ffmpeg(["-i", str(episode), "-map", "0:v", *VIDEO_ENCODE_ARGS, str(scratch / "floor.mp4")],
               "benchmark floor encode")
    return time.perf_counter() - began


def run_benchmark(workdir: Path | None = None, workers: int = 2, shots: int = 40) -> dict[str, float]:
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="cinefleet-bench-")) if own else workdir
    assert folder is not None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        project = reference_project(folder / "project", shots)
        store, out = folder / "store", folder / "out"
        shutil.rmtree(store, ignore_errors=True)

        began = time.perf_counter()
        cold = render(RenderRequest(project=project, out=out, store=store, workers=workers))
        cold_s = time.perf_counter() - began
        if cold.output is None:
            raise SystemExit(f"reference render blocked: {cold.blocked}")
        duration = cold.output.duration_s

        floor_s = _floor(out / "episode.mp4", folder)

        _edit_one_line(project)
        began = time.perf_counter()
        warm = render(RenderRequest(project=project, out=out, store=store, workers=workers))
        warm_s = time.perf_counter() - began
        summary = warm.summary
        shot_total = summary.shots_rendered + summary.shots_reused
        figures = {
            "episode_seconds": duration,
            "shots": float(shot_total),
            "cold_seconds": cold_s,
            "cold_x_realtime": duration / cold_s,
            "floor_seconds": floor_s,
            "cold_over_floor": cold_s / floor_s,
            "warm_seconds": warm_s,
            "warm_shot_hit_rate": summary.shots_reused / shot_total,
            "warm_cache_hit_rate": summary.cache_hit_rate,
        }
        print(f"reference episode: {shot_total} shots, {duration:.1f} s, 1280x720 @ 24 fps, "
              f"voice: {cold.summary.voice_mode}, workers: {workers}")
        print(f"cold render      {cold_s:8.1f} s   {duration / cold_s:5.1f}x realtime   (target ≤ 90 s)")
        print(f"floor (1 encode) {floor_s:8.1f} s   cold/floor = {cold_s / floor_s:.2f}")
        print(f"warm re-render   {warm_s:8.1f} s   after one dialogue edit   (target ≤ 15 s)")
        print(f"warm cache hits  shots {summary.shots_reused}/{shot_total} = {figures['warm_shot_hit_rate']:.1%}, "
              f"all stages {summary.cache_hits}/{summary.cache_hits + summary.cache_misses} = "
              f"{summary.cache_hit_rate:.1%}   (target ≥ 95%)")
        for stage in cold.summary.stages:
            print(f"  cold {stage.stage:<12} {stage.seconds:7.2f} s")
        for stage in summary.stages:
            print(f"  warm {stage.stage:<12} {stage.seconds:7.2f} s")
        return figures
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
