"""AssetManifest + profile → RenderPlan (spec §5.8, §11).

The plan is where the profile lands: resolution, fps, which image each shot shows (by content
URI) and what stands in for it when it is missing. Only ``preview_local`` is built; asking for
another profile is refused with a clear error rather than quietly rendering a preview.
"""

from __future__ import annotations

from pipeline.errors import InputError
from pipeline.models import AssetManifest, ShotList
from pipeline.models.project import ProfileSettings
from pipeline.models.render import AudioPlan, Motion, PlannedShot, Profile, RenderPlan
from pipeline.models.shotlist import Movement
from pipeline.store import uri_for

BUILT_PROFILES = ("preview_local",)

MOTIONS: dict[Movement, Motion] = {
    "static": Motion(),
    "push_in": Motion(zoom_from=1.0, zoom_to=1.15),
    "pull_out": Motion(zoom_from=1.15, zoom_to=1.0),
    "pan_left": Motion(zoom_from=1.1, zoom_to=1.1, pan_x=-1.0),
    "pan_right": Motion(zoom_from=1.1, zoom_to=1.1, pan_x=1.0),
}


def check_profile(profile: str) -> Profile:
    if profile not in BUILT_PROFILES:
        known = "standard_local, hq_providerX"
        if profile in known.split(", "):
            raise InputError(f"--profile: value {profile!r}: expected 'preview_local'; {profile} is not built yet")
        raise InputError(f"--profile: value {profile!r}: expected one of preview_local, {known}")
    return profile  # type: ignore[return-value]


def build_plan(
    profile: Profile,
    settings: ProfileSettings,
    shotlist: ShotList,
    shotlist_hash: str,
    manifest: AssetManifest,
    manifest_hash: str,
    ffmpeg_build: str,
    voice_engine: str,
) -> RenderPlan:
    resolved = {requirement.asset_id: requirement for requirement in manifest.assets}
    fade = shotlist.fps // 2  # the episode fades in and out over half a second
    last = len(shotlist.shots) - 1
    shots = []
    for index, shot in enumerate(shotlist.shots):
        requirement = resolved[shot.visual_asset]
        image = requirement.resolved.content_hash
        card = () if image else (f"missing: {shot.visual_asset}", requirement.description, *shot.caption_card)
        shots.append(
            PlannedShot(
                shot_id=shot.shot_id,
                frames=shot.frames,
                kind="still" if shot.movement == "static" else "ken_burns",
                asset_id=shot.visual_asset,
                asset_uri=uri_for(image) if image else None,
                card_lines=card,
                motion=MOTIONS[shot.movement],
                fade_in=min(fade, shot.frames // 2) if index == 0 else 0,
                fade_out=min(fade, shot.frames // 2) if index == last else 0,
            )
        )
    return RenderPlan.create(
        profile=profile,
        width=settings.width,
        height=settings.height,
        fps=shotlist.fps,
        timing_lock_hash=shotlist.timing_lock_hash,
        shotlist_hash=shotlist_hash,
        manifest_hash=manifest_hash,
        ffmpeg_build=ffmpeg_build,
        shots=tuple(shots),
        audio=AudioPlan(voice_engine=voice_engine, music_mood=manifest.music_mood),
    )
