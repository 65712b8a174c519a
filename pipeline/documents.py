"""Reading documents from disk with errors an author can act on.

Every failure names the file, the field (as a JSON path), the offending value and what was
expected, and is raised as :class:`~pipeline.errors.InputError` before anything is written.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import ValidationError

from pipeline.errors import InputError
from pipeline.models import DOCUMENTS, Canon, Project, Versioned

V = TypeVar("V", bound=Versioned)

#: Largest JSON document (project, canon, asset library) read: a real one is a few hundred KB at most,
#: and a document is read whole into memory.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

#: File stems that name a document kind although they are not the class name.
STEM_ALIASES = {"project": "Project", "canon": "Canon", "library": "AssetLibrary", "run_summary": "RunSummary"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_validation_error(path: Path, error: ValidationError) -> str:
    """One line per problem: file, field, value, expectation."""
    lines = []
    for item in error.errors(include_url=False):
        field = _field_path(tuple(p for p in item["loc"] if not _is_union_tag(p)))
        if item["type"] == "missing":
            lines.append(f"{path}: field '{field}': missing; expected a value (the field is required)")
        else:
            message = _expectation(item["msg"])
            lines.append(f"{path}: field '{field}': value {_show(item.get('input'))}: expected {message}")
    return "\n".join(dict.fromkeys(lines))


def _expectation(message: str) -> str:
    """Turn pydantic's sentence into the object of "expected ..."."""
    message = message.removeprefix("Value error, ")
    for prefix, replacement in (("Input should be ", ""), ("String should ", "a string that should ")):
        if message.startswith(prefix):
            return replacement + message.removeprefix(prefix)
    return message


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union branch it tried ("Canon", "str", "function-after[...]"); an
    # author never wrote those, so they are left out of the field path.
    return isinstance(part, str) and (part[:1].isupper() or part in {"str", "int"} or "[" in part)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path, max_bytes: int, where: str = "") -> IO[bytes]:
    """Open ``path`` for reading only if it is a regular file of at most ``max_bytes``.

    Opened without blocking and checked on the open descriptor, so a FIFO or a device (``/dev/zero``)
    named by an untrusted file is refused at once instead of hanging or filling memory, and nothing can
    swap the file between the check and the read. ``where`` (file, field, value) starts the error when
    ``path`` was named by another file.

    Raises:
        FileNotFoundError: nothing is there (the caller knows whether that is an error).
        InputError: anything else that is not a regular file of a sensible size.
    """
    subject = f"{where}: {path}" if where else f"{path}:"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"{subject} cannot be opened ({exc.strerror}); expected a readable regular file") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputError(f"{subject} is {_file_kind(info.st_mode)}; expected a regular file")
    if info.st_size > max_bytes:
        os.close(fd)
        raise InputError(f"{subject} is {info.st_size} bytes; expected at most {max_bytes} bytes")
    return os.fdopen(fd, "rb")


def read_capped(handle: IO[bytes], path: Path, max_bytes: int, where: str = "") -> bytes:
    """Read a file ``open_regular`` opened, refusing it if it grew past ``max_bytes`` since."""
    with handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        subject = f"{where}: {path}" if where else f"{path}:"
        raise InputError(f"{subject} is more than {max_bytes} bytes; expected at most {max_bytes} bytes")
    return data


def read_json(path: Path) -> Any:
    try:
        data = read_capped(open_regular(path, MAX_DOCUMENT_BYTES), path, MAX_DOCUMENT_BYTES)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected a JSON document") from None
    return _parse_json(path, data)


def _parse_json(path: Path, data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: byte {exc.start} is not UTF-8; expected UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg}); expected valid JSON"
        ) from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, nesting thousands deep
        raise InputError(f"{path}: {str(exc)[:100]}; expected a JSON document of ordinary numbers and depth") from None


def parse_document(path: Path, data: Any, cls: type[V]) -> V:
    if not isinstance(data, dict):
        raise InputError(f"{path}: field '(document)': value {_show(data)}: expected a JSON object ({cls.__name__})")
    if "schema_version" not in data:
        raise InputError(
            f"{path}: field 'schema_version': missing; expected a semantic version such as "
            f"{cls.SCHEMA_VERSION!r} (every {cls.__name__} carries one)"
        )
    try:
        # Another MAJOR is a different schema: its other "errors" would only be noise.
        cls.check_version(data["schema_version"])
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{path}: field 'schema_version': value {_show(data['schema_version'])}: expected {exc}"
        ) from None
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(describe_validation_error(path, exc)) from None


def load_document(path: Path, cls: type[V]) -> V:
    return parse_document(path, read_json(path), cls)


def kind_for(path: Path) -> str | None:
    stem = path.stem
    if stem in DOCUMENTS:
        return stem
    # "project-external-canon.json" is a project too: the first word names the kind, unless the
    # whole name is a kind ("canon_diff.json" is a CanonDiff, not a Canon).
    words = stem.lower().replace("-", "_")
    by_class = {name.lower(): name for name in DOCUMENTS}
    joined = words.replace("_", "")
    return by_class.get(joined) or STEM_ALIASES.get(words) or STEM_ALIASES.get(words.split("_")[0])


def load_any(path: Path, kind: str | None = None) -> Versioned:
    """Load a document whose kind comes from ``kind`` or the file name (``Script.json``)."""
    kind = kind or kind_for(path)
    if kind is None or kind not in DOCUMENTS:
        known = ", ".join(sorted(DOCUMENTS))
        raise InputError(f"{path}: cannot tell the document kind from the file name; pass --kind, one of: {known}")
    if kind == "Project":
        return load_project(path).project
    return load_document(path, DOCUMENTS[kind])


def confine(owner: Path | str, field: str, value: str, base: Path, root: Path) -> Path:
    """``value``, a path relative to ``base``, resolved; refused unless it stays inside ``root``.

    Paths in a project file are untrusted: an absolute path, ``../`` or a symlink pointing out of the
    project's folder would let a project read any file the renderer can (and publish it in an episode).
    Resolving first (symlinks included) and then requiring the result inside the resolved ``root``
    closes all three. ``owner`` names the file that holds ``field``.
    """
    root = root.resolve()
    try:
        resolved = (base / value).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte, a name too long
        raise InputError(f"{owner}: field '{field}': value {_show(value)}: cannot be resolved ({exc}); expected a "
                         "path inside the project's folder") from None
    if not resolved.is_relative_to(root):
        raise InputError(f"{owner}: field '{field}': value {_show(value)}: expected a path inside the project's "
                         f"folder {root} (it resolves to {resolved})")
    return resolved


@dataclass(frozen=True)
class LoadedProject:
    """A validated project with its canon resolved and where it came from."""

    path: Path
    project: Project
    canon: Canon

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def library(self) -> Path:
        """The asset library's folder, confined to the project's folder."""
        return confine(self.path, "assets.library", self.project.assets.library, self.folder, self.folder)


def load_project(path: Path) -> LoadedProject:
    path = Path(path)
    project = load_document(path, Project)
    folder = path.resolve().parent
    if isinstance(project.canon, Canon):
        canon = project.canon
    else:
        canon_path = confine(path, "canon", project.canon, folder, folder)
        where = f"{path}: field 'canon': value {_show(project.canon)}"
        try:
            data = read_capped(open_regular(canon_path, MAX_DOCUMENT_BYTES, where), canon_path, MAX_DOCUMENT_BYTES,
                               where)
        except FileNotFoundError:
            raise InputError(
                f"{where}: expected an inline canon or the path of a Canon JSON file relative to the project "
                f"({canon_path} does not exist)"
            ) from None
        canon = parse_document(canon_path, _parse_json(canon_path, data), Canon)
    confine(path, "assets.library", project.assets.library, folder, folder)
    return LoadedProject(path=path.resolve(), project=project, canon=canon)
