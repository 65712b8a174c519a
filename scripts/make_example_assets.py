"""Draw the pilot's example asset library: ``examples/pilot/assets/*.png`` and ``library.json``.

The images are procedural (gradients and shapes, no noise) so they are small, carry no third
party's rights, and come out the same on every run: the only randomness is a fixed-seed star
field, and PNGs are written without metadata. Run from anywhere:

    .venv/bin/python scripts/make_example_assets.py

Two gaps are deliberate, to show what a run does with them: ``bg_harbour`` is needed by the
pilot but not drawn (the run uses a placeholder card), and ``prop_lantern`` is drawn but listed
with ``"license": null`` (the resolver must reject it as an unknown licence, spec §25.4).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

ASSETS = Path(__file__).resolve().parent.parent / "examples" / "pilot" / "assets"
BACKGROUND = (960, 540)
PORTRAIT = (540, 540)
RGB = tuple[int, int, int]

LICENSE = {
    "license_type": "generated_local",
    "attribution": "",
    "purchase_record": "",
    "provider_or_model": "cinefleet scripts/make_example_assets.py",
    "retrieval_date": "2026-11-21",
    "redistributable": True,
}


def gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    """A vertical gradient; rows are constant, so PNG's row filters compress it to almost nothing."""
    height = size[1]
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / (height - 1)
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return column.resize(size, Image.Resampling.NEAREST)


def lighthouse() -> Image.Image:
    """Gull Point at night: stars, a black rock, a white tower and its beam over the sea."""
    image = gradient(BACKGROUND, (12, 18, 40), (40, 58, 92))
    draw = ImageDraw.Draw(image)
    stars = random.Random(20261121)
    for _ in range(60):
        x, y = stars.randrange(960), stars.randrange(300)
        draw.point((x, y), fill=(220, 226, 240))
    draw.rectangle((0, 380, 960, 540), fill=(22, 34, 56))
    for y in range(392, 540, 22):
        draw.line((0, y, 960, y), fill=(48, 66, 98), width=2)
    draw.polygon([(560, 540), (620, 400), (820, 390), (900, 540)], fill=(14, 14, 18))
    draw.polygon([(690, 400), (706, 190), (744, 190), (760, 400)], fill=(232, 232, 226))
    for y in (250, 320):
        draw.rectangle((700, y, 750, y + 18), fill=(170, 40, 40))
    draw.rectangle((698, 160, 752, 190), fill=(250, 226, 140))
    draw.polygon([(692, 160), (725, 132), (758, 160)], fill=(30, 30, 34))
    draw.polygon([(700, 175), (120, 90), (120, 260)], fill=(96, 104, 110))
    return image


def portrait(backdrop: tuple[RGB, RGB], skin: RGB, hair: RGB, coat: RGB, long_hair: bool) -> Image.Image:
    """A flat bust: coat, neck, head, hair and eyes over a soft backdrop."""
    image = gradient(PORTRAIT, *backdrop)
    draw = ImageDraw.Draw(image)
    if long_hair:
        draw.rounded_rectangle((170, 120, 370, 400), radius=90, fill=hair)
    draw.ellipse((90, 380, 450, 700), fill=coat)
    draw.rectangle((240, 320, 300, 400), fill=skin)
    draw.ellipse((180, 130, 360, 350), fill=skin)
    draw.chord((176, 110, 364, 300), start=180, end=360, fill=hair)
    for x in (232, 292):
        draw.ellipse((x, 225, x + 16, 241), fill=(30, 30, 36))
    draw.line((245, 300, 295, 300), fill=(120, 60, 60), width=4)
    return image


def elias() -> Image.Image:
    return portrait(((58, 74, 96), (24, 30, 42)), (214, 178, 150), (200, 200, 204), (40, 52, 70), long_hair=False)


def mara() -> Image.Image:
    return portrait(((96, 70, 60), (40, 28, 30)), (198, 150, 118), (70, 40, 28), (150, 110, 40), long_hair=True)


def lantern() -> Image.Image:
    """A storm lantern; listed without a licence on purpose."""
    image = gradient((360, 360), (30, 30, 36), (60, 54, 48))
    draw = ImageDraw.Draw(image)
    draw.arc((140, 40, 220, 120), start=180, end=360, fill=(90, 90, 96), width=8)
    draw.rectangle((120, 80, 240, 110), fill=(70, 70, 76))
    draw.rounded_rectangle((130, 110, 230, 280), radius=18, fill=(250, 214, 120))
    draw.rectangle((120, 280, 240, 310), fill=(70, 70, 76))
    return image


#: id → (kind, drawing, description, licence). ``None`` as the licence is the deliberate unknown.
CATALOGUE: dict[str, tuple[str, Callable[[], Image.Image], str, dict[str, object] | None]] = {
    "bg_lighthouse": ("background", lighthouse, "Gull Point Lighthouse at night", LICENSE),
    "char_elias": ("character", elias, "portrait of Elias Crane, the keeper", LICENSE),
    "char_mara": ("character", mara, "portrait of Mara Voss, the radio operator", LICENSE),
    "prop_lantern": ("prop", lantern, "storm lantern of unknown origin (licence unknown)", None),
}


def main() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    entries = []
    for asset_id, (kind, draw, description, license) in CATALOGUE.items():
        file = f"{asset_id}.png"
        draw().save(ASSETS / file, format="PNG", optimize=True)
        entries.append({"id": asset_id, "kind": kind, "file": file, "description": description, "license": license})
    library = {"schema_version": "1.0.0", "assets": entries}
    (ASSETS / "library.json").write_text(json.dumps(library, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for path in sorted(ASSETS.glob("*.png")):
        print(f"{path.relative_to(ASSETS.parent)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
