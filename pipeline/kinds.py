"""Every kind of stage a run is made of, in one table, read by `cinefleet render` and the site alike.

Per kind: the queue it runs on at a site, its place in the dispatch order, the input hashes it
takes from the stages it depends on, the function that runs it, the media job that fixes its
identity (for the kinds a site may finish from the cache without sending), the stages it adds
to the graph once it is done, and the files it publishes. The graph is therefore written once:
``cinefleet render`` walks it in one process, a site sends each stage to a worker.

A run is complete when every one of its stages is done; there is no other rule, so a run of
no-op ``probe`` stages (the site benchmark's) completes exactly as an episode does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import steps
from pipeline.bundle import open_bundle
from pipeline.media import audio
from pipeline.models import AssetManifest, Project, RenderPlan, ShotList
from pipeline.stages.qa import VoiceSpan
from pipeline.workspace import Workspace

#: A stage's arguments: what it was created with, plus the input hashes taken from its dependencies.
Args = dict[str, Any]
#: What a stage made, by name: artifact hashes (and a media job's cache key).
Outputs = dict[str, Any]
#: The outputs of a run's finished stages, by stage id.
Done = Mapping[str, Outputs]


@dataclass(frozen=True)
class Planned:
    """A stage to add to a run: its id, kind, the stages it waits for and its own arguments."""

    stage_id: str
    kind: str
    needs: tuple[str, ...]
    args: Args


def _no_inputs(args: Args, done: Done) -> Args:
    return {}


@dataclass(frozen=True)
class StageKind:
    name: str
    #: The site queue it runs on (spec §13: by resource type).
    queue: str
    #: Among ready stages, lower goes first: the ones others wait on, and long ones early.
    order: int
    #: The function that runs it; None for a kind that does no work (a dispatch probe).
    run: Callable[[Workspace, Args], Outputs] | None
    #: The input hashes it takes from the outputs of the stages it depends on.
    inputs: Callable[[Args, Done], Args] = _no_inputs
    #: For a media kind, the job whose key is the stage's identity: a site finishes the stage
    #: from the registry, without sending it, when that key already has an artifact.
    job: Callable[[Workspace, Args], steps.FileJob] | None = None
    #: The stages it adds to the run once it is done (the plan adds a stage per line and shot).
    expand: Callable[[Workspace, Args, Done], list[Planned]] | None = None
    #: Its principal output, the one a stage row and a run summary name.
    output: str | None = None
    #: The files a finished run publishes from its outputs: file name -> output name.
    publishes: Mapping[str, str] = field(default_factory=dict)
    #: Whether what it makes depends on the ffmpeg and espeak-ng builds (``steps.BUILDS``): the
    #: plan records them and the media stages encode with them, so a site gives such a stage
    #: only to a worker with the builds it pinned.
    builds: bool = False


# -- the functions ---------------------------------------------------------------------------


def _script(ws: Workspace, args: Args) -> Outputs:
    bundle = open_bundle(ws, args["bundle"])
    written = steps.write_script(ws, bundle.project, bundle.canon)
    return {"project": written.project, "canon": written.canon, "script": written.script}


def _canon_gate(ws: Workspace, args: Args) -> Outputs:
    steps.check_canon(ws, args["canon"], args["script"])
    return {}


def _shotlist(ws: Workspace, args: Args) -> Outputs:
    fps = open_bundle(ws, args["bundle"]).settings(args["profile"]).fps
    return {"shotlist": steps.write_shotlist(ws, args["script"], args["canon"], fps)}


def _assets(ws: Workspace, args: Args) -> Outputs:
    bundle = open_bundle(ws, args["bundle"])
    return {"manifest": steps.write_manifest(ws, args["shotlist"], args["script"], args["canon"], bundle.library,
                                             bundle.music)}


def _render_plan(ws: Workspace, args: Args) -> Outputs:
    settings = open_bundle(ws, args["bundle"]).settings(args["profile"])
    return {"plan": steps.write_plan(ws, args["profile"], settings, args["shotlist"], args["manifest"],
                                     steps.voice_engine())}


def _finish(ws: Workspace, args: Args) -> Outputs:
    project = open_bundle(ws, args["bundle"]).project
    spans = tuple(VoiceSpan(shot_id, start, start + len(audio.read_wav(ws.path(wav))))
                  for shot_id, start, wav in args["voices"])
    finished = steps.finish(ws, project, args["profile"], args["lineage"], args["clips"], args["audio"], spans)
    return {"episode": finished.episode, "captions": finished.captions, "output": finished.output}


def _voice_job(ws: Workspace, args: Args) -> steps.FileJob:
    plan = ws.load_document(args["plan"], RenderPlan)
    manifest = ws.load_document(args["manifest"], AssetManifest)
    line = next(line for line in manifest.vo_lines if line.line_id == args["line_id"])
    return steps.voice_job(line, args["window"], plan.audio.voice_engine)


def _shot_job(ws: Workspace, args: Args) -> steps.FileJob:
    plan = ws.load_document(args["plan"], RenderPlan)
    shotlist = ws.load_document(args["shotlist"], ShotList)
    planned = next(s for s in plan.shots if s.shot_id == args["shot_id"])
    shot = next(s for s in shotlist.shots if s.shot_id == args["shot_id"])
    return steps.shot_job(ws, planned, shot, plan)


def _audio_job(ws: Workspace, args: Args) -> steps.FileJob:
    plan = ws.load_document(args["plan"], RenderPlan)
    shotlist = ws.load_document(args["shotlist"], ShotList)
    voices = [(start, wav) for _, start, wav in args["voices"]]
    return steps.audio_job(ws, voices, shotlist, plan, args["project_id"])


def run_job(ws: Workspace, job: steps.FileJob) -> tuple[Outputs, bool]:
    """Run a media job; returns its outputs and whether the artifact was already there."""
    found, cached = job.run(ws)
    return {"file": found, "key": job.key(ws)}, cached


def _media(make_job: Callable[[Workspace, Args], steps.FileJob]) -> Callable[[Workspace, Args], Outputs]:
    def run(ws: Workspace, args: Args) -> Outputs:
        return run_job(ws, make_job(ws, args))[0]

    return run


# -- the inputs ------------------------------------------------------------------------------


def _script_inputs(args: Args, done: Done) -> Args:
    return {"script": done["script"]["script"], "canon": done["script"]["canon"]}


def _assets_inputs(args: Args, done: Done) -> Args:
    return {**_script_inputs(args, done), "shotlist": done["shotlist"]["shotlist"]}


def _plan_inputs(args: Args, done: Done) -> Args:
    return {"shotlist": done["shotlist"]["shotlist"], "manifest": done["assets"]["manifest"]}


def _voices(args: Args, done: Done) -> list[list[Any]]:
    return [[p["shot_id"], p["start"], done[p["stage_id"]]["file"]] for p in args["placements"]]


def _audio_inputs(args: Args, done: Done) -> Args:
    return {"voices": _voices(args, done)}


def _finish_inputs(args: Args, done: Done) -> Args:
    return {"voices": _voices(args, done), "clips": [done[f"shot:{shot_id}"]["file"] for shot_id in args["shots"]],
            "audio": done["audio"]["file"]}


# -- the graph -------------------------------------------------------------------------------


def first_stages(bundle: str, profile: str) -> list[Planned]:
    """The stages a run of a project starts with; the plan's expansion adds the rest."""
    chain = (("script", ()), ("canon_gate", ("script",)), ("shotlist", ("canon_gate",)), ("assets", ("shotlist",)),
             ("render_plan", ("assets",)))
    return [Planned(kind, kind, needs, {"bundle": bundle, "profile": profile}) for kind, needs in chain]


def probe_stages(count: int) -> list[Planned]:
    """``count`` independent no-op stages: a run that measures a site's own dispatch overhead."""
    return [Planned(f"probe:{number:06d}", "probe", (), {}) for number in range(count)]


def _expand_plan(ws: Workspace, args: Args, done: Done) -> list[Planned]:
    """Once the plan exists: a stage per voice line and per shot, the mix, and the finish."""
    plan_hash, shotlist_hash, manifest_hash = done["render_plan"]["plan"], args["shotlist"], args["manifest"]
    plan = ws.load_document(plan_hash, RenderPlan)
    shotlist = ws.load_document(shotlist_hash, ShotList)
    manifest = ws.load_document(manifest_hash, AssetManifest)
    script = done["script"]
    project_id = ws.load_document(script["project"], Project).id
    added: list[Planned] = []
    placements: list[dict[str, Any]] = []  # stage id, shot id and start of each voice line
    for placement in steps.voice_placements(shotlist, manifest, plan):
        stage_id = f"voice:{placement.line.line_id}"
        added.append(Planned(stage_id, "voice", ("render_plan",),
                             {"plan": plan_hash, "manifest": manifest_hash, "line_id": placement.line.line_id,
                              "window": placement.window}))
        placements.append({"stage_id": stage_id, "shot_id": placement.shot_id, "start": placement.start})
    for shot in plan.shots:
        added.append(Planned(f"shot:{shot.shot_id}", "shot", ("render_plan",),
                             {"plan": plan_hash, "shotlist": shotlist_hash, "shot_id": shot.shot_id}))
    added.append(Planned("audio", "audio", tuple(p["stage_id"] for p in placements) or ("render_plan",),
                         {"plan": plan_hash, "shotlist": shotlist_hash, "project_id": project_id,
                          "placements": placements}))
    lineage = {"Project": script["project"], "Canon": script["canon"], "Script": script["script"],
               "ShotList": shotlist_hash, "AssetManifest": manifest_hash, "RenderPlan": plan_hash}
    added.append(Planned("finish", "finish", (*(f"shot:{s.shot_id}" for s in plan.shots), "audio"),
                         {"bundle": args["bundle"], "profile": args["profile"], "lineage": lineage,
                          "placements": placements, "shots": [s.shot_id for s in plan.shots]}))
    return added


KINDS: dict[str, StageKind] = {
    kind.name: kind
    for kind in (
        StageKind("script", "local_ai_queue", 2, _script, output="script", publishes={"Script.json": "script"}),
        StageKind("canon_gate", "cpu_queue", 2, _canon_gate, inputs=_script_inputs),
        StageKind("shotlist", "cpu_queue", 2, _shotlist, inputs=_script_inputs, output="shotlist",
                  publishes={"ShotList.json": "shotlist"}),
        StageKind("assets", "media_queue", 2, _assets, inputs=_assets_inputs, output="manifest",
                  publishes={"AssetManifest.json": "manifest"}),
        StageKind("render_plan", "cpu_queue", 2, _render_plan, inputs=_plan_inputs, expand=_expand_plan,
                  output="plan", publishes={"RenderPlan.json": "plan"}, builds=True),
        StageKind("voice", "cpu_queue", 0, _media(_voice_job), job=_voice_job, output="file", builds=True),
        StageKind("shot", "cpu_queue", 3, _media(_shot_job), job=_shot_job, output="file", builds=True),
        StageKind("audio", "cpu_queue", 1, _media(_audio_job), inputs=_audio_inputs, job=_audio_job, output="file",
                  builds=True),
        StageKind("finish", "cpu_queue", 4, _finish, inputs=_finish_inputs, output="output",
                  publishes={"RenderOutput.json": "output", "episode.mp4": "episode", "captions.srt": "captions"},
                  builds=True),
        StageKind("probe", "cpu_queue", 3, None),
    )
}

#: Every file a run may publish, in the order `cinefleet render` lists them.
PUBLISHED = (*(name for kind in KINDS.values() for name in kind.publishes), "run_summary.json")


def arguments(planned_args: Args, kind: StageKind, done: Done) -> Args:
    """A stage's full arguments once its dependencies are done."""
    return {**planned_args, **kind.inputs(planned_args, done)}


def published(done: Done, kinds_of: Mapping[str, str]) -> dict[str, str]:
    """The files a finished run publishes: file name -> artifact hash, from its stages' outputs."""
    files = {}
    for stage_id, outputs in done.items():
        for name, output in KINDS[kinds_of[stage_id]].publishes.items():
            files[name] = outputs[output]
    return files
