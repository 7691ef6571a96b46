"""Dataset loaders and helpers for the lm-eval-aas offline tasks.

Referenced from the YAML files next to this module as `!function utils.<name>`.
lm-eval 0.4.13 imports this file by its absolute path (lm_eval/tasks/_yaml_loader.py)
and calls `custom_dataset(**metadata, **dataset_kwargs)` instead of
`datasets.load_dataset`, so data is read relative to this file: the tasks work from
any checkout location and any working directory, with no network and no HF cache.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import datasets

DATA_DIR = Path(__file__).resolve().parent / "data"


def _read_jsonl(name: str) -> list[dict]:
    path = DATA_DIR / name
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _test_split(rows: list[dict]) -> dict[str, datasets.Dataset]:
    return {"test": datasets.Dataset.from_list(rows)}


def load_mc(**_kwargs) -> dict[str, datasets.Dataset]:
    """lmeval_aas_mc: 20 capital-city questions, 4 choices each."""
    return _test_split(_read_jsonl("mc.jsonl"))


def load_gen(**_kwargs) -> dict[str, datasets.Dataset]:
    """lmeval_aas_gen: 20 one-digit arithmetic questions with short answers."""
    return _test_split(_read_jsonl("gen.jsonl"))


# --- lmeval_aas_slow -------------------------------------------------------

SLOW_NUM_DOCS = 3000


def load_slow(**_kwargs) -> dict[str, datasets.Dataset]:
    """lmeval_aas_slow: SLOW_NUM_DOCS generated arithmetic questions (no data file)."""
    rows = [
        {"id": i, "question": f"What is {i} + 1?", "answer": str(i + 1)}
        for i in range(SLOW_NUM_DOCS)
    ]
    return _test_split(rows)


def _slow_delay_seconds() -> float:
    # Per-document delay; LMEVAL_AAS_SLOW_DELAY_MS overrides the default of 50 ms.
    try:
        return max(0.0, float(os.environ.get("LMEVAL_AAS_SLOW_DELAY_MS", "50")) / 1000.0)
    except ValueError:
        return 0.05


def slow_doc_to_text(doc: dict) -> str:
    """Prompt builder that sleeps, so building the requests takes time per document.

    lm-eval calls doc_to_text once per document inside its "building contexts"
    tqdm loop, so the run prints steady progress while it is slow.
    """
    time.sleep(_slow_delay_seconds())
    return f"Q: {doc['question']}\nA:"


# --- lmeval_aas_broken -----------------------------------------------------


def load_broken(**_kwargs) -> dict[str, datasets.Dataset]:
    """lmeval_aas_broken: reads a data file that does not exist, on purpose.

    Raises FileNotFoundError when lm_eval builds the task, so `lm_eval run` fails.
    """
    return _test_split(_read_jsonl("this-file-does-not-exist.jsonl"))
