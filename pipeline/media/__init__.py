"""Media layer: pure functions that turn pictures, text and PCM into the episode's mp4.

ffmpeg (pinned build, no shell) renders shots and muxes; Pillow draws stills, cards and
captions; numpy mixes the audio timeline. Nothing here knows about projects, stores or
queues: callers pass paths and specs, and cache results by the specs plus ``build_id()``.
"""
