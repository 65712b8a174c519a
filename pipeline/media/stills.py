"""Still images for shots: covered stills, placeholder cards and caption strips (Pillow).

Everything is drawn with the shipped DejaVu Sans and Pillow's basic layout engine, and saved
as PNG without metadata at a fixed compression level, so the same inputs give the same bytes
on every machine (libraqm and fontconfig, which vary between machines, are never consulted).
Captions are drawn here rather than with ffmpeg's libass for the same reason.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw, ImageFont, ImageOps

from pipeline.errors import MediaError
from pipeline.media.files import atomic_output

FONT_PATH = Path(__file__).resolve().parent.parent / "fonts" / "DejaVuSans.ttf"

#: Most pixels a source image may have (8K UHD is 33 MP). Decoding costs about 4 bytes a pixel before
#: any resize, and a PNG of a few hundred KB can claim 13000x13000, so the header is checked first.
MAX_ASSET_PIXELS = 40_000_000

_PNG_COMPRESS_LEVEL = 6
_CARD_BACKGROUND = (20, 22, 28)
DEFAULT_ACCENT = (240, 160, 40)
_CARD_TEXT = (235, 235, 240)
_CAPTION_BOX = (0, 0, 0, 150)
_CAPTION_MAX_LINES = 3
_ELLIPSIS = "\u2026"


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Loaded per call (about a millisecond), not cached: a FreeType face shared between
    # threads rendering shots in parallel is not safe to use concurrently.
    return ImageFont.truetype(str(FONT_PATH), size, layout_engine=ImageFont.Layout.BASIC)


def _save_png(image: Image.Image, out_png: Path) -> None:
    """Save without ancillary chunks (ICC, dpi, text) so only pixels decide the bytes."""
    image.info.clear()
    with atomic_output(out_png) as tmp:
        image.save(tmp, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, optimize=False)


def _flatten(image: Image.Image) -> Image.Image:
    """Return an RGB image, transparent areas composited onto black."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    base = Image.new("RGB", rgba.size, (0, 0, 0))
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


@contextlib.contextmanager
def open_capped(source: Path | IO[bytes]) -> Iterator[Image.Image]:
    """``Image.open`` that refuses more than ``MAX_ASSET_PIXELS`` from the header, before any decoding.

    Pillow refuses an image only beyond twice its limit of 89 MP and merely warns above the limit; the
    warning is silenced here because the lower cap, checked next, refuses every image it warns about.

    Raises:
        MediaError: the image claims too many pixels.
        OSError, ValueError: Pillow cannot read it (``PIL.UnidentifiedImageError`` is an OSError).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(source)
        except Image.DecompressionBombError as exc:
            pillow_says = str(exc).split(",")[0]  # "Image size (N pixels) exceeds limit of M pixels"
            raise MediaError(f"refused as a decompression bomb: {pillow_says}; expected an image of at most "
                             f"{MAX_ASSET_PIXELS} pixels") from None
    with opened:
        if opened.width * opened.height > MAX_ASSET_PIXELS:
            raise MediaError(f"{opened.width}x{opened.height} = {opened.width * opened.height} pixels; expected an "
                             f"image of at most {MAX_ASSET_PIXELS} pixels")
        yield opened


def cover_image(src: Path, width: int, height: int, out_png: Path, scale: float = 1.0) -> None:
    """Cover-crop ``src`` to width:height and resize it to (width*scale, height*scale).

    The crop is centred and sub-pixel (Pillow's ``resize(box=...)``), done in one LANCZOS pass
    so no intermediate rounding shifts the framing. ``scale > 1`` leaves headroom for a Ken
    Burns zoom so zoomed frames are downscaled rather than upscaled.
    """
    out_w, out_h = round(width * scale), round(height * scale)
    if width <= 0 or height <= 0 or out_w <= 0 or out_h <= 0:
        raise ValueError(f"cover_image: bad size {width}x{height} scale {scale}")
    try:
        with open_capped(src) as opened:
            image = _flatten(ImageOps.exif_transpose(opened))
    except (OSError, ValueError, MediaError) as exc:
        raise MediaError(f"cover image {src}: cannot read image: {exc}") from exc
    src_w, src_h = image.size
    target = width / height
    if src_w / src_h > target:
        crop_w, crop_h = src_h * target, float(src_h)
    else:
        crop_w, crop_h = float(src_w), src_w / target
    left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    _save_png(image.resize((out_w, out_h), Image.Resampling.LANCZOS, box=box), out_png)


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Greedy word wrap; a word wider than the line is broken by characters."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:
                if line and font.getlength(line + char) > max_width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def _truncate(lines: list[str], max_lines: int, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Keep ``max_lines`` lines, ending the last kept one with an ellipsis if any were cut."""
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and font.getlength(last + _ELLIPSIS) > max_width:
        last = last[:-1]
    kept[-1] = last.rstrip() + _ELLIPSIS
    return kept


def draw_card(
    lines: list[str], width: int, height: int, out_png: Path, *, accent: tuple[int, int, int] = DEFAULT_ACCENT
) -> None:
    """Draw a placeholder card: dark background, accent frame, a PLACEHOLDER tag and ``lines``.

    Used where an asset is missing so the animatic still plays with the right timing; the
    tag makes it impossible to mistake for a real frame. Lines are wrapped, and cut with an
    ellipsis if they do not fit.
    """
    image = Image.new("RGB", (width, height), _CARD_BACKGROUND)
    draw = ImageDraw.Draw(image)
    border = max(2, height // 90)
    draw.rectangle((0, 0, width - 1, height - 1), outline=accent, width=border)
    margin = width // 16

    tag_size = max(10, height // 18)  # kept as an int: Pillow types FreeTypeFont.size as float
    tag_font = _font(tag_size)
    tag = "PLACEHOLDER"
    left, top, right, bottom = draw.textbbox((0, 0), tag, font=tag_font)
    pad = tag_size // 3
    tag_box = (margin, margin, margin + right - left + 2 * pad, margin + bottom - top + 2 * pad)
    draw.rectangle(tag_box, fill=accent)
    draw.text((margin + pad - left, margin + pad - top), tag, font=tag_font, fill=_CARD_BACKGROUND)

    body_size = max(10, height // 22)
    body_font = _font(body_size)
    line_height = round(body_size * 1.35)
    body_top = tag_box[3] + line_height
    max_width = width - 2 * margin
    wrapped = [w for line in lines for w in _wrap(line, body_font, max_width)]
    # int(): Pillow types text boxes as floats, though for an integer origin they are whole pixels.
    wrapped = _truncate(wrapped, max(1, int((height - margin - body_top) // line_height)), body_font, max_width)
    for index, line in enumerate(wrapped):
        draw.text((margin, body_top + index * line_height), line, font=body_font, fill=_CARD_TEXT)
    _save_png(image, out_png)


def draw_caption(text: str, width: int, out_png: Path) -> tuple[int, int]:
    """Draw ``text`` as a transparent RGBA strip ``width`` wide; return its (width, height).

    White text with a dark outline on a translucent box stays readable on any image. The
    font is about width/32 and shrinks (to 70 %) before text is cut, so at most three lines
    are shown. The strip is overlaid by the shot renderer, which gates it frame-exactly.
    """
    base_size = max(10, round(width / 32))
    max_width = width * 0.88
    for factor in (1.0, 0.9, 0.8, 0.7):
        size = max(8, round(base_size * factor))  # an int: Pillow types FreeTypeFont.size as float
        font = _font(size)
        lines = _wrap(" ".join(text.split()), font, max_width)
        if len(lines) <= _CAPTION_MAX_LINES:
            break
    lines = _truncate(lines, _CAPTION_MAX_LINES, font, max_width)

    stroke = max(1, size // 14)
    line_height = round(size * 1.25)
    pad_x, pad_y = size // 2, size // 4
    text_w = max(font.getlength(line) for line in lines)
    height = len(lines) * line_height + 2 * pad_y
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    box_w = round(text_w) + 2 * pad_x
    box_left = (width - box_w) // 2
    draw.rounded_rectangle((box_left, 0, box_left + box_w - 1, height - 1), radius=pad_y * 2, fill=_CAPTION_BOX)
    for index, line in enumerate(lines):
        draw.text(
            (width / 2, pad_y + index * line_height + line_height / 2),
            line,
            font=font,
            fill=(255, 255, 255, 255),
            anchor="mm",
            stroke_width=stroke,
            stroke_fill=(0, 0, 0, 255),
        )
    _save_png(image, out_png)
    return width, height
