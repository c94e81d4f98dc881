"""MLflow-native records of a run: its real split as a dataset input and its generator as a pyfunc model.

So MLflow's own UI columns (*Dataset*, *Models*) and APIs (``mlflow.pyfunc.load_model``) mean something.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
#: MLflow's limit on a dataset digest (``MAX_DATASET_DIGEST_SIZE``): a prefix of the project's sha256 digest
MAX_DIGEST = 36
DATASET_CONTEXT = "training"
MODEL_TYPE = "generator"

# the "model from code" file MLflow copies into the model and runs at load time
_MODEL_CODE = '''"""synthboost generator as an MLflow pyfunc: predict(labels) -> uint8 images (N×28×28)."""
import mlflow

from synthboost.mlflow_native import GeneratorModel

mlflow.models.set_model(GeneratorModel())
'''


# ---------------------------------------------------------------- the split as an MLflow dataset
def split_dataset(*, name: str, digest: str, source: str, train_y, val_y, class_names: tuple[str, ...]):
    """An ``mlflow.data`` dataset describing a run's real split (train + validation), without copying the images.

    ``digest`` is the project's full-content sha256, since MLflow's own digests hash only the first ~10k elements."""
    from mlflow.data.dataset import Dataset
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.types import Schema, TensorSpec

    def per_class(y) -> dict[str, int]:
        counts = np.bincount(np.asarray(y), minlength=len(class_names))
        return {class_names[k]: int(c) for k, c in enumerate(counts)}

    profile = {"num_train": int(len(train_y)), "num_val": int(len(val_y)), "train_per_class": per_class(train_y),
               "val_per_class": per_class(val_y), "sha256": digest}
    schema = TensorDatasetSchema(features=Schema([TensorSpec(np.dtype(np.uint8), (-1, *IMAGE_SHAPE), "image")]),
                                 targets=Schema([TensorSpec(np.dtype(np.int64), (-1,), "label")]))

    class SplitDataset(Dataset):
        def _compute_digest(self) -> str:
            return digest[:MAX_DIGEST]

        @property
        def profile(self) -> dict[str, Any]:
            return profile

        @property
        def schema(self) -> TensorDatasetSchema:
            return schema

        def to_dict(self) -> dict[str, str]:
            return super().to_dict() | {"schema": json.dumps(schema.to_dict()), "profile": json.dumps(profile)}

    return SplitDataset(source=LocalArtifactDatasetSource(str(source)), name=name, digest=digest[:MAX_DIGEST])


def dataset_input(dataset, context: str = DATASET_CONTEXT):
    """The ``DatasetInput`` entity ``MlflowClient.log_inputs`` takes, tagged with its context (as ``mlflow.log_input``)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return DatasetInput(dataset=dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


# ---------------------------------------------------------------- the generator as an MLflow pyfunc model
def signature():
    """labels (1-D int64) -> images (uint8 N×28×28); param ``seed`` (default 0)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *IMAGE_SHAPE))]),
                          params=ParamSchema([ParamSpec("seed", "long", 0)]))


def requirements() -> list[str]:
    """What loading the model needs besides ``synthboost`` itself: the installed versions of its imports."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("torch", "numpy", "pydantic", "pyyaml", "mlflow"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """A synthboost generator behind MLflow's pyfunc face: ``predict(labels) -> images``."""

    def load_context(self, context) -> None:
        import torch

        from synthboost import generators

        state = torch.load(context.artifacts["checkpoint"], map_location="cpu", weights_only=True)
        self.generator = generators.load(state)

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        labels = np.asarray(model_input).reshape(-1).astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise ValueError(f"labels must be class indices 0-{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
        seed = int((params or {}).get("seed", 0))
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays as it was
            torch.manual_seed(seed)
            images = self.generator.sample_batched(torch.from_numpy(labels))
        return images.reshape(len(labels), *IMAGE_SHAPE).numpy()


def save_generator_model(path: Path, *, checkpoint: Path, mlflow_model) -> None:
    """Write the pyfunc model (code file, checkpoint, signature, requirements) into the new folder ``path``."""
    with tempfile.TemporaryDirectory(prefix="synthboost-pyfunc-") as tmp:
        code = Path(tmp, "generator_model.py")
        code.write_text(_MODEL_CODE)
        with warnings.catch_warnings():  # it asks for type hints and an input example; the signature says it all
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(str(path), python_model=str(code), artifacts={"checkpoint": str(checkpoint)},
                                     signature=signature(), pip_requirements=requirements(),
                                     mlflow_model=mlflow_model)
