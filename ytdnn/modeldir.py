"""Model directories: which files a directory may name, how its config.json is checked, and the
one error a failed load raises. Every loader (candidates, ranker and ranker-bag members, the
two-stage recommender, the index, the vocabularies and feature files) reads through it.

- Confinement. A loader asks for each file by its name relative to the directory
  (``ModelDir.file``, ``folder``, ``weights``); the name is resolved (symlinks followed) and refused
  unless it lies inside the resolved directory. Absolute names, ``..`` that climbs out and
  symlinks that point out are errors. A symlink whose target resolves inside the directory is
  allowed: it is one more name for a file the directory holds. The directory itself may be a
  symlink (``models/current -> models/v3``, which a serving reload follows): its target is the root.
  Each loader confines to the directory it is given: a two-stage directory's candidates/ and
  ranker/ are model directories of their own, as is the generator's index/, so a symlink in
  index/ may point only inside index/.
- Schemas. ``ModelDir.config`` reads config.json as a JSON object with exactly the keys of the
  kind's schema, each of its type (``ytdnn.config.check_type``): unknown, missing and mistyped
  keys are errors that name them, as are another kind or format version.
- Errors. Whatever fails while loading (a missing file, bad JSON, a truncated safetensors or
  faiss file, weights of the wrong shape, ...) raises ``ModelDirError``, a ValueError whose one-line
  message names the directory and the file. Nothing is ever unpickled, and a pickle (or a
  ``torch.save`` archive) where weights are expected is refused by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ytdnn.config import Config, check_type

CONFIG = "config.json"
_PICKLE_PROTOCOLS = range(2, 6)  # protocols 2-5 begin with b"\x80" and the protocol number
_ZIP = b"PK\x03\x04"  # torch.save writes a zip archive of pickles
_MAGIC = {".npz": _ZIP, ".npy": b"\x93NUMPY"}  # checked before numpy, which blames unknown
# formats on pickle and suggests allow_pickle


def _safetensors_framed(path: Path) -> bool:
    """Whether ``path`` begins as safetensors does: an 8-byte little-endian header length that
    fits in the file, then the JSON header's "{" (a pickle's 9th byte is a frame length's, 0)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


class ModelDirError(ValueError):
    """A model directory (or a file of it) that cannot be loaded; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ModelDirNotFoundError(ModelDirError, FileNotFoundError):
    """The directory has no config.json: it is no model directory at all."""


class ModelDir:
    """Checked access to the files of one model directory ``directory``.

    what: the kind named in "not a ytdnn {what} directory" ("model", "ranker", "index", ...).
    ``current`` is the file last asked for: the one a failure inside ``loading()`` is blamed on.
    """

    def __init__(self, directory: str | Path, what: str = "model"):
        self.directory, self.what, self.current = Path(directory), what, CONFIG
        self.root = self.directory.resolve()

    # ---- confinement ----------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """The resolved path of ``name`` (relative, "/"-separated); ModelDirError if it leaves the
        directory. It need not exist."""
        self.current = name if isinstance(name, str) and name.isprintable() else repr(name)
        if not isinstance(name, str) or not name:
            raise self.error(f"a file name must be a non-empty string, got {name!r}")
        if Path(name).is_absolute():
            raise self.error("an absolute path: a model directory names only files inside itself")
        resolved = (self.root / name).resolve()
        if not resolved.is_relative_to(self.root):
            raise self.error(f"resolves to {resolved}, outside the model directory")
        return resolved

    def has(self, name: str) -> bool:
        """Whether the directory holds something called ``name`` (a symlink out counts: reading it
        through ``file``/``folder`` is then the error)."""
        return os.path.lexists(self.root / name)

    def file(self, name: str) -> Path:
        """The regular file ``name``, confined; refused when missing or when it is a pickle."""
        path = self.path(name)
        if not path.is_file():
            raise self.error("missing" if not path.exists() else "not a regular file")
        with open(path, "rb") as f:
            head = f.read(2)
        # a safetensors header of 640, 896, 1152 or 1408 bytes also begins b"\x80" + 2..5
        if len(head) == 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS and not _safetensors_framed(path):
            raise self.error("a pickle file: model directories never hold pickle, and ytdnn never "
                             "unpickles")
        magic = _MAGIC.get(path.suffix)
        if magic is not None:
            with open(path, "rb") as f:
                if f.read(len(magic)) != magic:
                    raise self.error(f"not a {path.suffix} file")
        return path

    def weights(self, name: str) -> Path:
        """The safetensors file ``name``, confined, its framing checked before any parser sees it
        (an 8-byte little-endian header length, then a JSON header that fits in the file)."""
        path = self.file(name)
        with open(path, "rb") as f:
            if f.read(len(_ZIP)) == _ZIP:
                raise self.error("a torch.save archive (pickles), not safetensors: model directories "
                                 "never hold pickle, and ytdnn never unpickles")
        if not _safetensors_framed(path):
            raise self.error("not a safetensors file (bad or truncated header)")
        return path

    def folder(self, name: str, check_entries: bool = False) -> Path:
        """The subdirectory ``name``, confined. check_entries: also every entry below it, for a
        loader that reads the folder's files by its own names (``Featurizer.load``)."""
        path = self.path(name)
        if not path.is_dir():
            raise self.error("missing" if not path.exists() else "not a directory")
        if check_entries:
            # os.walk lists a symlinked folder (checked here) without entering it
            for parent, folders, files in os.walk(path):
                for entry in folders + files:
                    self.path(str((Path(parent) / entry).relative_to(self.root)))
            self.current = name
        return path

    def read_json(self, name: str) -> Any:
        """The JSON document in the file ``name``."""
        path = self.file(name)
        return json.loads(path.read_text("utf-8"))

    # ---- config.json ----------------------------------------------------------------------------

    def kind(self) -> Any:
        """The "kind" of config.json (None when it has none), for loaders of several kinds."""
        self._require_config()
        document = self.read_json(CONFIG)
        return document.get("kind") if isinstance(document, dict) else None

    def _require_config(self) -> None:
        self.current = CONFIG
        if self.directory.is_file():  # YouTubeDNN.save's archive, say
            raise ModelDirNotFoundError(f"{self.directory} is a file, not a ytdnn {self.what} directory: an archive "
                                        "YouTubeDNN.save wrote loads with ytdnn.load, or unzip it into a directory")
        if not os.path.lexists(self.root / CONFIG):
            raise ModelDirNotFoundError(f"{self.directory} is not a ytdnn {self.what} directory "
                                        f"(no {CONFIG})")

    def config(self, schema: Mapping[str, Any], kind: str, version: int) -> dict[str, Any]:
        """config.json checked against ``schema`` ({key: type hint}; every key required) and of
        ``kind`` with "format_version" ``version``; values typed (Config sections built)."""
        self._require_config()
        document = self.read_json(CONFIG)
        if isinstance(document, dict) and document.get("kind") != kind:
            raise self.error(f"holds kind {document.get('kind')!r}, not {kind!r}")
        try:
            values = check_config(document, schema)
        except ValueError as err:
            raise self.error(str(err)) from err
        if values["format_version"] != version:
            raise self.error(f"format_version {values['format_version']} is not {version}")
        return values

    # ---- errors ---------------------------------------------------------------------------------

    def error(self, reason: str) -> ModelDirError:
        """A ModelDirError blaming the current file."""
        return ModelDirError(f"{self.directory}: {self.current}: {reason}")

    @contextlib.contextmanager
    def loading(self) -> Iterator[ModelDir]:
        """Turn any failure inside into a ModelDirError blaming the current file; a broken
        directory fails in whichever library reads it (json, numpy, safetensors, faiss, torch),
        each with its own exception types."""
        try:
            yield self
        except ModelDirError:
            raise
        except Exception as err:  # chained as __cause__ for library callers
            raise self.error(f"{type(err).__name__}: {err}") from err


def readable_as_folder(path: Path) -> Path:
    """safetensors writes its files 0600, every other file follows the umask: give ``path`` the
    read and write bits of its folder (made under the umask), so that whoever may read the model
    directory (a service account, say) may read its weights too."""
    os.chmod(path, path.parent.stat().st_mode & 0o666)
    return path


def remove_entries(directory: Path, names: Iterable[str]) -> None:
    """Remove the files and folders ``names`` of ``directory`` that exist (a symlink itself, never
    what it points to): what an earlier save wrote there and this one does not replace."""
    for name in names:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def load_errors(path: str | Path) -> Iterator[None]:
    """Turn any failure inside into a ModelDirError naming ``path``, for loaders of one file."""
    try:
        yield
    except ModelDirError:
        raise
    except Exception as err:  # chained as __cause__ for library callers
        raise ModelDirError(f"{path}: {type(err).__name__}: {err}") from err


def check_config(document: Any, schema: Mapping[str, Any], required: bool = True) -> dict[str, Any]:
    """``document`` (parsed JSON) checked against ``schema`` ({key: type hint}) -> typed values.

    Every key of the schema must be present when ``required``; unknown keys are errors. A hint
    that is a dataclass (not a Config) takes a JSON object checked the same way, field by field.
    ValueError names the offending keys.
    """
    if not isinstance(document, dict):
        # ValueError like every other bad setting: loaders catch one kind of error
        raise ValueError(f"must be a JSON object, got {type(document).__name__}")  # noqa: TRY004
    unknown = sorted(set(document) - set(schema))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; known: {sorted(schema)}")
    missing = sorted(set(schema) - set(document)) if required else []
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    out = {}
    for key, value in document.items():
        hint = schema[key]
        if _is_plain_dataclass(hint):
            try:
                fields = check_config(value, typing.get_type_hints(hint))
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from err
            out[key] = hint(**fields)
        else:
            out[key] = check_type(key, value, hint)
    return out


def _is_plain_dataclass(hint: Any) -> bool:
    plain = isinstance(hint, type) and dataclasses.is_dataclass(hint)
    return plain and not issubclass(hint, Config)
