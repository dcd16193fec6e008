"""Candidate sources behind one protocol (paper §4, fig. 2): the candidate generator, EASE, item
co-occurrence and fresh-popular, each a ``Retriever`` over the generator's item vocabulary
(``base.py`` says how they are called); ``save_source`` / ``load_source`` store any of them."""

from ytdnn.retrieval.base import Context, Retriever
from ytdnn.retrieval.cooc import CoocConfig, CoocSource
from ytdnn.retrieval.ease import EASESource, EASESourceConfig
from ytdnn.retrieval.generator import GeneratorSource
from ytdnn.retrieval.popular import PopularConfig, PopularSource
from ytdnn.retrieval.store import load_source, save_source

__all__ = [
    "Context",
    "CoocConfig",
    "CoocSource",
    "EASESource",
    "EASESourceConfig",
    "GeneratorSource",
    "PopularConfig",
    "PopularSource",
    "Retriever",
    "load_source",
    "save_source",
]
