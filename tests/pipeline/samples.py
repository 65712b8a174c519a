"""Minimal valid documents of every kind, as plain JSON data, for schema tests."""

from __future__ import annotations

import copy
from typing import Any

V = "1.0.0"
H = "a" * 64

CHARACTER = {"id": "mara", "name": "Mara Voss", "age": 34, "status": "alive", "location_id": "harbour"}
LOCATION = {"id": "harbour", "name": "The Harbour"}
CANON = {"schema_version": V, "characters": [CHARACTER], "locations": [LOCATION]}
LICENSE = {"license_type": "CC0", "provider_or_model": "test", "retrieval_date": "2026-11-21"}
SHOT = {
    "shot_id": "b1-est", "scene_id": "b1", "template": "establishing", "frames": 48, "framing": "wide",
    "movement": "push_in", "audio": {"music_mood": "calm"}, "visual_asset": "bg_harbour",
}
SHOTLIST = {"schema_version": V, "script_hash": H, "fps": 24, "shots": [SHOT], "total_frames": 48,
            "timing_lock_hash": H}
MANIFEST = {
    "schema_version": V, "shotlist_hash": H, "music_mood": "calm",
    "assets": [{"asset_id": "bg_harbour", "kind": "background", "description": "x", "shot_ids": ["b1-est"],
                "resolved": {"source": "library", "content_hash": H, "license": LICENSE, "placeholder": False}}],
}
PLAN = {
    "schema_version": V, "profile": "preview_local", "width": 640, "height": 360, "fps": 24,
    "timing_lock_hash": H, "shotlist_hash": H, "manifest_hash": H, "ffmpeg_build": "ffmpeg version n9",
    "shots": [{"shot_id": "b1-est", "frames": 48, "kind": "ken_burns", "asset_id": "bg_harbour",
               "asset_uri": f"cas://sha256/{H}"}],
    "audio": {"voice_engine": "none", "music_mood": "calm"},
}
OUTFILE = {"uri": f"cas://sha256/{H}", "sha256": H, "bytes": 10}
SUMMARY = {
    "schema_version": V, "project_id": "p", "tenant_id": "default", "site_id": "local", "status": "completed",
    "stages": [{"stage": "script", "seconds": 0.1}], "cache_hits": 1, "cache_misses": 1, "cache_hit_rate": 0.5,
    "shots_rendered": 1, "shots_reused": 0, "local_jobs": 2, "voice_mode": "none", "workers": 2,
    "total_seconds": 1.0,
}

DOCUMENTS: dict[str, dict[str, Any]] = {
    "Project": {
        "schema_version": V, "id": "pilot", "title": "Pilot", "premise": "A storm comes.",
        "target_duration": {"seconds": 60}, "episode": {"schema_version": V, "episode_number": 1},
        "canon": CANON, "beats": [{"id": "b1", "summary": "Mara waits.", "location_id": "harbour"}],
    },
    "ProjectBundle": {"schema_version": V, "project": H, "canon": H, "library": H, "files": {"harbour.png": H}},
    "Canon": CANON,
    "CanonDiff": {"schema_version": V, "id": "d1", "justification": "moves", "provenance": "writer",
                  "modified_facts": [{"character_id": "mara", "field": "location_id", "value": "harbour"}]},
    "Episode": {"schema_version": V, "episode_number": 1},
    "Script": {
        "schema_version": V, "project_id": "pilot", "tenant_id": "default", "title": "Pilot", "episode_number": 1,
        "generator": "template-v1",
        "scenes": [{"id": "b1", "heading": "THE HARBOUR - DAY", "location_id": "harbour", "time_of_day": "day",
                    "mood": "calm", "dialogue": [{"line_id": "b1-l1", "speaker_id": "mara",
                                                  "speaker_name": "Mara Voss", "text": "Hello."}]}],
    },
    "ShotList": SHOTLIST,
    "AssetLibrary": {"schema_version": V, "assets": [{"id": "bg_harbour", "kind": "background",
                                                      "file": "harbour.png", "license": LICENSE}]},
    "AssetManifest": MANIFEST,
    "RenderPlan": PLAN,
    "RenderOutput": {
        "schema_version": V, "project_id": "p", "tenant_id": "default", "site_id": "local",
        "profile": "preview_local", "video": OUTFILE, "captions": OUTFILE, "audio": OUTFILE, "frames": 48,
        "audio_samples": 96000, "duration_s": 2.0, "lineage": {"Script": H}, "qa": [], "voice_engine": "none",
        "ffmpeg_build": "ffmpeg version n9",
    },
    "RunSummary": SUMMARY,
    "RenderPackageRequest": {
        "schema_version": V, "request_id": "123e4567-e89b-42d3-a456-426614174000", "idempotency_key": "k1",
        "tenant_id": "default", "render_profile": "preview_local",
        "inputs": {"shotlist_ref": SHOTLIST, "asset_manifest_ref": f"cas://sha256/{H}",
                   "render_plan_ref": PLAN},
    },
    "RenderPackageResponse": {"schema_version": V, "request_id": "r1", "status": "completed",
                              "run_summary": SUMMARY},
}


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(DOCUMENTS[name])
