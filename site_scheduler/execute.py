"""What a worker does with one stage message: run the pipeline step, report what it made.

The step runs against the site's artifact store through a workspace whose registry lives in
memory; the rows it would have written travel back with the result, and the scheduler, the
site database's only writer, records them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline import steps
from pipeline.documents import load_project
from pipeline.media import audio
from pipeline.models import AssetManifest, RenderPlan, ShotList
from pipeline.models.project import ProfileSettings
from pipeline.registry import ArtifactRow, AssetCacheRow, DerivationRow
from pipeline.stages.assets import open_library
from pipeline.stages.qa import VoiceSpan
from pipeline.workspace import DerivationHints, Workspace
from site_scheduler.keys import Keys


def _rows(ws: Workspace) -> dict[str, list[dict[str, Any]]]:
    with Session(ws.registry.engine) as session:
        def dump(table: type) -> list[dict[str, Any]]:
            return [
                {column.name: getattr(row, column.name) for column in table.__table__.columns}
                for row in session.scalars(select(table))
            ]

        artifacts = dump(ArtifactRow)
        for row in artifacts:
            row.pop("recorded_at", None)
        return {"artifacts": artifacts, "derivations": dump(DerivationRow), "asset_cache": dump(AssetCacheRow)}


def _settings(project_path: str, profile: str) -> tuple[Any, ProfileSettings]:
    loaded = load_project(Path(project_path))
    return loaded, loaded.project.render_profiles.get(profile, ProfileSettings())


class RedisHints:
    """Derivations made inside a stage (the AAC chunks of a mix), shared by the site's workers in Redis.

    The scheduler's registry knows them too (the rows travel back with each result), but a
    worker never reads the site database; without these hints a worker would encode every
    chunk of a mix again after a one-line edit.
    """

    STAGES = (steps.ChunkCache.STAGE,)

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    def get(self, tenant_id: str, stage: str, key: str) -> str | None:
        if stage not in self.STAGES:
            return None
        found = self.redis.hget(self.keys.hints(tenant_id, stage), key)
        return None if found is None else found.decode()

    def put(self, tenant_id: str, stage: str, key: str, output: str) -> None:
        if stage in self.STAGES:
            self.redis.hset(self.keys.hints(tenant_id, stage), key, output)


def run_stage(store: Path, site_id: str, tenant_id: str, kind: str, args: dict[str, Any],
              hints: DerivationHints | None = None) -> dict[str, Any]:
    """Run one stage; returns ``{"outputs": {...}, "rows": {...}, "hits": {...}}``. Pipeline errors propagate."""
    if kind == "probe":  # measures the site's dispatch overhead: no workspace, no work
        return {"outputs": {}, "rows": {}}
    ws = Workspace(store, tenant_id, site_id, registry_url="sqlite://", hints=hints)
    try:
        outputs = _dispatch(ws, kind, args)
        return {"outputs": outputs, "rows": _rows(ws), "hits": dict(ws.hits), "misses": dict(ws.misses)}
    finally:
        ws.close()


def _dispatch(ws: Workspace, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    if kind == "script":
        loaded, _ = _settings(args["project"], args["profile"])
        written = steps.write_script(ws, loaded.project, loaded.canon)
        return {"project": written.project, "canon": written.canon, "script": written.script}
    if kind == "shotlist":
        _, settings = _settings(args["project"], args["profile"])
        steps.check_canon(ws, args["canon"], args["script"])
        return {"shotlist": steps.write_shotlist(ws, args["script"], args["canon"], settings.fps)}
    if kind == "assets":
        loaded, _ = _settings(args["project"], args["profile"])
        library = open_library(loaded.library, "assets.library", loaded.path)
        music = loaded.project.music.mood if loaded.project.music.enabled else None
        return {"manifest": steps.write_manifest(ws, args["shotlist"], args["script"], args["canon"], library, music)}
    if kind == "render_plan":
        _, settings = _settings(args["project"], args["profile"])
        plan = steps.write_plan(ws, args["profile"], settings, args["shotlist"], args["manifest"],
                                steps.voice_engine())
        return {"plan": plan}
    if kind in ("voice", "shot", "audio"):
        job = file_job(ws, kind, args)
        found, _ = job.run(ws)
        return {"file": found, "key": job.key(ws)}
    if kind == "finish":
        loaded, _ = _settings(args["project"], args["profile"])
        spans = tuple(
            VoiceSpan(shot_id, start, start + len(audio.read_wav(ws.path(wav))))
            for shot_id, start, wav in args["voices"]
        )
        finished = steps.finish(ws, loaded.project, args["profile"], args["lineage"], args["clips"], args["audio"],
                                spans)
        return {"episode": finished.episode, "captions": finished.captions, "output": finished.output}
    raise ValueError(f"unknown stage kind {kind!r}")


def file_job(ws: Workspace, kind: str, args: dict[str, Any]) -> steps.FileJob:
    """Rebuild a media job from its message; the scheduler builds the same one to know its key."""
    plan = ws.load_document(args["plan"], RenderPlan)
    if kind == "shot":
        shotlist = ws.load_document(args["shotlist"], ShotList)
        planned = next(s for s in plan.shots if s.shot_id == args["shot_id"])
        shot = next(s for s in shotlist.shots if s.shot_id == args["shot_id"])
        return steps.shot_job(ws, planned, shot, plan)
    if kind == "voice":
        manifest = ws.load_document(args["manifest"], AssetManifest)
        line = next(line for line in manifest.vo_lines if line.line_id == args["line_id"])
        return steps.voice_job(line, args["window"], plan.audio.voice_engine)
    shotlist = ws.load_document(args["shotlist"], ShotList)
    voices = [(start, wav) for _, start, wav in args["voices"]]
    return steps.audio_job(ws, voices, shotlist, plan, args["project_id"])
