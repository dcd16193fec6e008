"""Save and load any candidate source by its kind.

A saved source is a model directory whose config.json names its kind:

    "ytdnn.candidates"        GeneratorSource: the candidate generator's own model directory
    "ytdnn.source.ease"       EASESource      (config.json + ease.safetensors)
    "ytdnn.source.cooc"       CoocSource      (config.json + cooc.npz)
    "ytdnn.source.popular"    PopularSource   (config.json + popular.npz)

``load_source`` reads the kind through ``ModelDir`` and hands the directory to that source's
``load``, which reads only files inside it, through ``ModelDir``, and never unpickles.
"""

from __future__ import annotations

from pathlib import Path

from ytdnn.modeldir import ModelDir
from ytdnn.retrieval import cooc, ease, popular
from ytdnn.retrieval.base import Retriever
from ytdnn.retrieval.generator import GeneratorSource

GENERATOR_KIND = "ytdnn.candidates"  # ytdnn.candidates.KIND, not imported: no import cycle
LOADERS = {
    ease.KIND: ease.EASESource.load,
    cooc.KIND: cooc.CoocSource.load,
    popular.KIND: popular.PopularSource.load,
}
KINDS = (GENERATOR_KIND, *LOADERS)


def save_source(source: Retriever, directory: str | Path) -> Path:
    """Write ``source`` into ``directory`` (config.json with its kind, and its files)."""
    if not isinstance(source, Retriever) or not hasattr(source, "save"):
        raise TypeError(f"not a candidate source: {type(source).__name__}")
    return Path(source.save(Path(directory)))


def load_source(directory: str | Path, generator=None) -> Retriever:
    """The source saved in ``directory``, whatever its kind.

    generator: a loaded CandidateGenerator. A generator directory is then served by it instead of
    being loaded again, and any other source must share its catalogue (the same number of
    items), or ModelDirError. Any failure is a ModelDirError (a ValueError) naming the directory
    and the file.
    """
    md = ModelDir(directory, "candidate source")
    with md.loading():
        kind = md.kind()
    if kind == GENERATOR_KIND:
        return GeneratorSource(generator) if generator is not None else GeneratorSource.load(directory)
    if kind not in LOADERS:
        md.current = "config.json"
        raise md.error(f"holds kind {kind!r}, not a candidate source ({', '.join(KINDS)})")
    source = LOADERS[kind](directory)
    if generator is not None and source.num_items != generator.featurizer_.num_items:
        md.current = "config.json"
        raise md.error(f"a source over {source.num_items} catalogue ids, the generator's vocabulary "
                       f"has {generator.featurizer_.num_items}")
    return source
