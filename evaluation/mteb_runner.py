"""MTEB runner: omniret embedders as an mteb 2.x encoder, local retrieval tasks, results in mteb's format.

``MTEBEncoder`` implements mteb's ``EncoderProtocol`` (``encode(DataLoader[BatchedInput], *,
task_metadata, hf_split, hf_subset, prompt_type)``). Queries get the task's instruction, documents
none, as the Qwen3 embedding models expect: the raw instruction is handed to the embedder's
``instruction=``, and the embedder formats it its own way (Qwen3-VL: the system turn; text Qwen3:
``Instruct: {task}\\nQuery:{query}``; sentence-transformers models without prompts ignore it).

Any task name mteb knows runs when its data can be reached (the hub); ``local_retrieval_task`` builds
a task over in-memory data, which needs no network. Results are written by mteb's own ``ResultCache``
under ``OUT/mteb/results/<model>/<revision>[/experiments/dim=<d>]/<Task>.json`` and summarised as
omniret ``RunResult``s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError, DimensionError
from omniret.evaluation.reports import RunResult
from omniret.types import Item

# this module is the only place that imports mteb (an optional extra), and only inside functions and
# the classes built by them, so `import omniret.evaluation` works without it.


def load_mteb() -> Any:
    try:
        import mteb
    except ImportError as e:  # pragma: no cover - the [eval] extra installs it
        raise ConfigError("the mteb runner needs the mteb package: pip install 'omniret[eval]'") from e
    return mteb


def make_encoder(embedder: Embedder, *, dim: int | None = None, revision: str | None = None,
                 batch_size: int = 32, instruction: str | None = None) -> Any:
    """Wrap an omniret ``Embedder`` as an mteb encoder (an ``AbsEncoder`` subclass instance).

    ``dim`` picks a Matryoshka prefix; it is recorded as an mteb experiment (``dim=<d>``) so runs at
    different dims are stored side by side. ``instruction`` replaces the task's query instruction
    (``""``: queries get none, as for models not trained with instructions).
    """
    load_mteb()
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType

    full = int(embedder.dim)
    if dim is not None and not 1 <= int(dim) <= full:
        raise DimensionError(f"dim {dim}: must be between 1 and the model's dimension {full}")
    out_dim = int(dim) if dim is not None else full
    override = instruction

    class OmniretEncoder(AbsEncoder):
        """An omniret embedder seen through mteb's encoder protocol."""

        def __init__(self) -> None:
            self.model = embedder
            self.dim = out_dim
            self.batch_size = batch_size
            modalities = ["text"] + (["image"] if "image" in embedder.modalities else [])
            name = str(embedder.name)
            if Path(name).exists() or "/" not in name:  # a local checkpoint: mteb wants "org/model"
                name = f"local/{Path(name).name or name}"
            self.mteb_model_meta = ModelMeta.create_empty({
                "name": name, "revision": revision or "local", "embed_dim": out_dim,
                "similarity_fn_name": ScoringFunction.COSINE, "use_instructions": True,
                "modalities": modalities, "framework": ["PyTorch"], "loader": None,
                "experiment_kwargs": {"dim": out_dim} if out_dim != full else None,
            })

        def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str,
                   prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            instruction = None
            if prompt_type == PromptType.query:
                instruction = (self.get_instruction(task_metadata, prompt_type) if override is None
                               else override) or None
            items: list[Item] = []
            for batch in inputs:
                texts = batch.get("text")
                images = batch.get("image")
                n = len(texts) if texts is not None else len(images) if images is not None else 0
                for i in range(n):
                    text = texts[i] if texts is not None else None
                    image = images[i] if images is not None else None
                    items.append(Item(text=text if text else None, image=image))
            out = [self.model.embed(items[s:s + self.batch_size], instruction=instruction)
                   for s in range(0, len(items), self.batch_size)]
            vecs = np.concatenate(out) if out else np.zeros((0, full), dtype=np.float32)
            if self.dim != full:
                from omniret.embed.matryoshka import truncate

                vecs = truncate(vecs, self.dim)
            return vecs

    return OmniretEncoder()


def local_retrieval_task(name: str, corpus: Mapping[str, str | tuple[str, str]], queries: Mapping[str, str],
                         qrels: Mapping[str, Mapping[str, int]], *, split: str = "test",
                         instruction: str | None = None, description: str = "A local retrieval task.",
                         main_score: str = "ndcg_at_10") -> Any:
    """An mteb retrieval task over in-memory data (no download): corpus doc id -> text or (title, text)."""
    load_mteb()
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    if not corpus or not queries or not qrels:
        raise ConfigError(f"task {name}: corpus, queries and qrels must all be non-empty")
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        raise ConfigError(f"task {name}: qrels name query {unknown[0]!r}, which is not among the queries")
    docs = []
    for did, value in corpus.items():
        title, text = value if isinstance(value, tuple) else ("", value)
        docs.append({"id": str(did), "title": title, "text": text})
    query_rows = [{"id": str(q), "text": t} for q, t in queries.items()]
    relevant = {str(q): {str(d): int(s) for d, s in docs_.items()} for q, docs_ in qrels.items()}

    # mteb types the prompt as its PromptDict, a TypedDict built at runtime that a checker cannot read
    prompt: Any = {"query": instruction} if instruction else None
    metadata = TaskMetadata(
        name=name, description=description, type="Retrieval", category="t2t",
        reference=None, dataset={"path": f"local/{name}", "revision": "local"},
        eval_splits=[split], eval_langs=["eng-Latn"], main_score=main_score, date=None, domains=None,
        task_subtypes=None, license=None, annotations_creators=None, dialect=None, sample_creation=None,
        bibtex_citation="", modalities=["text"], prompt=prompt,
    )

    class LocalRetrievalTask(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            split_data = {"corpus": Dataset.from_list(docs), "queries": Dataset.from_list(query_rows),
                          "relevant_docs": relevant, "top_ranked": None}
            # mteb annotates one split's data here, but reads {subset: {split: data}}
            dataset: Any = {"default": {split: split_data}}
            self.dataset = dataset
            self.data_loaded = True

    LocalRetrievalTask.metadata = metadata
    LocalRetrievalTask.__name__ = f"{name}Task"
    return LocalRetrievalTask()


def beir_task(path: str | Path, split: str = "test", *, instruction: str | None = None) -> Any:
    """An mteb retrieval task over a local BEIR-format folder (see ``omniret.evaluation.beir``)."""
    from omniret.evaluation.beir import load_beir

    data = load_beir(path, split)
    corpus = {d: " ".join(it.texts) for d, it in data.corpus.items()}
    queries = {q: " ".join(it.texts) for q, it in data.queries.items()}
    name = "".join(ch for ch in data.name.title() if ch.isalnum()) or "Local"
    return local_retrieval_task(f"Local{name}Retrieval", corpus, queries, data.qrels, split=split,
                                instruction=instruction, description=f"BEIR-format folder {path}")


def _metric_name(key: str) -> str | None:
    """mteb's ``ndcg_at_10`` -> ``ndcg@10``; keys that are not ranking metrics -> None."""
    for prefix, ours in (("ndcg_at_", "ndcg@"), ("recall_at_", "recall@"), ("mrr_at_", "mrr@"),
                         ("map_at_", "map@"), ("precision_at_", "precision@"), ("hit_rate_at_", "hit@")):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            return ours + key[len(prefix):]
    return None


def run_mteb(embedder: Embedder, tasks: Sequence[str | Any], out_dir: str | Path, *, dims: Sequence[int] | None = None,
             split: str = "test", batch_size: int = 32, instruction: str | None = None,
             metrics: Sequence[str] | None = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100", "hit@1"),
             overwrite: bool = True) -> list[RunResult]:
    """Run mteb's own evaluation of ``embedder`` on ``tasks`` (names or task objects), per dim.

    A name that is an existing folder is read as a BEIR-format dataset (``beir_task``), so local data
    runs through mteb's evaluation with no download.

    mteb's result files go under ``out_dir/mteb``; the returned runs hold every ranking metric mteb
    reported for ``split`` among ``metrics`` (None: all of them) plus ``main_score``.
    """
    mteb = load_mteb()
    resolved = []
    names = [t for t in tasks if isinstance(t, str) and not Path(t).is_dir()]
    resolved.extend(beir_task(t, split) for t in tasks if isinstance(t, str) and Path(t).is_dir())
    if names:
        try:
            resolved.extend(mteb.get_tasks(tasks=names))
        except KeyError as e:
            raise ConfigError(f"mteb does not know task(s) {names}: {e}") from e
    resolved.extend(t for t in tasks if not isinstance(t, str))
    if not resolved:
        raise ConfigError("no task to run; pass --tasks NAME (an mteb task name)")
    cache = mteb.ResultCache(cache_path=Path(out_dir) / "mteb")
    runs: list[RunResult] = []
    for dim in dims or [None]:
        encoder = make_encoder(embedder, dim=dim, batch_size=batch_size, instruction=instruction)
        for task in resolved:
            t0 = time.perf_counter()
            result = mteb.evaluate(encoder, task, cache=cache, overwrite_strategy="always" if overwrite else
                                   "only-missing", show_progress_bar=False)
            elapsed = time.perf_counter() - t0
            for task_result in result.task_results:
                for row in task_result.scores.get(split, []):
                    scores = {m: float(v) for k, v in row.items() if (m := _metric_name(k)) is not None}
                    if metrics:
                        scores = {m: scores[m] for m in metrics if m in scores}
                    scores["main_score"] = float(row.get("main_score", float("nan")))
                    runs.append(RunResult(
                        dataset=task_result.task_name, split=split, model=str(embedder.name), reranker=None,
                        metrics=scores,
                        settings={"task": task_result.task_name, "dim": encoder.dim, "rerank_top": 0,
                                  "hf_subset": row.get("hf_subset", "default"),
                                  "main_score_name": task.metadata.main_score, "mteb_version": mteb.__version__},
                        timings={"evaluate_s": round(elapsed, 4)}))
    return runs
