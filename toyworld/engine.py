"""The toy world's real search engine: BM25 over its corpus.

Used to label simulation-tuning pairs, by the engine code to build demonstrations, and to evaluate a
trained policy with real search. `ToyWorld.load(dir)` opens a built world folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from toyworld.corpus import build_corpus, visible_documents
from toyworld.world import World
from zerosearch.retrieval.index import BM25Index, load_corpus


class ToyWorld:
    """A world plus its corpus and a BM25 index over it (built on first search)."""

    def __init__(self, world: World, documents: Sequence[str]):
        if not documents:
            raise ValueError("ToyWorld needs a non-empty corpus")
        self.world = world
        self.documents = list(documents)
        self._index: BM25Index | None = None

    @classmethod
    def load(cls, directory: str | Path) -> ToyWorld:
        """Open a folder written by `python -m toyworld build` (world.json, corpus.jsonl)."""
        directory = Path(directory)
        world_path = directory / "world.json"
        if not world_path.exists():
            raise FileNotFoundError(f"{world_path} not found: is {directory} a built toy world?")
        return cls(World.load(world_path), load_corpus(directory / "corpus.jsonl"))

    @classmethod
    def for_training(cls, world: World) -> ToyWorld:
        """The engine over the documents training may see (none names a held-out person)."""
        return cls(world, [doc.contents for doc in visible_documents(world, build_corpus(world))])

    @property
    def index(self) -> BM25Index:
        if self._index is None:
            self._index = BM25Index(self.documents)
        return self._index

    def search_many(self, queries: Sequence[str], topk: int = 5) -> list[list[str]]:
        """The top-`topk` documents' texts for each query, best first."""
        if not queries:
            return []
        return [[self.documents[i] for i, _ in hits] for hits in self.index.search(queries, topk)]

    def search(self, query: str, topk: int = 5) -> list[str]:
        """The top-`topk` documents' texts for one query, best first."""
        return self.search_many([query], topk)[0]
