"""The models an experiment evaluates: trained members (an ensemble when several) or a
volume model prokd did not train; and picking a teacher by its validation Dice."""

from __future__ import annotations

from dataclasses import dataclass

from prokd.data.io import file_sha256
from prokd.distill.ensemble import ProbabilityAverage
from prokd.errors import ConfigError
from prokd.inference.model_files import onnx_parameters
from prokd.inference.trained import TrainedModel
from prokd.inference.volume_models import SharedSlices, SliceVolumeModel, VolumeModel
from prokd.models.profile import count_parameters
from prokd.training.run_log import best_val_dice


@dataclass
class ExperimentModel:
    """A model of the experiment: its name, role and trained members (several: an
    ensemble), or a volume model prokd did not train (``volume``)."""

    name: str
    role: str
    description: str
    members: list[TrainedModel]
    volume: VolumeModel | None = None

    def evaluable(self, shared: SharedSlices) -> VolumeModel:
        """What :func:`~prokd.evaluation.evaluate.evaluate_cases` runs for this model: the
        volume model, or the member (the probability average of the members) slice by
        slice, its preprocessing ``shared`` with the other slice models."""
        if self.volume is not None:
            return self.volume
        settings = self.members[0].settings  # all trained with the experiment's settings
        network = (
            self.members[0].network
            if len(self.members) == 1
            else ProbabilityAverage([m.network for m in self.members])
        )
        return SliceVolumeModel(self.name, network, settings, "", "checkpoint", shared)

    def fingerprint(self, placement: str | None = None) -> list[str]:
        """Contents of the members' checkpoints, and the digest of the localiser that
        places their ``gland`` grids (``placement``, when there is one); or the volume
        model's: an evaluation is reused only while equal."""
        if self.volume is not None:
            return [self.volume.fingerprint()]
        members = [file_sha256(m.path) for m in self.members]
        return members + ([f"localiser {placement}"] if placement else [])

    def params(self) -> int | None:
        """Parameters of the members, or of a volume model's ONNX file (``None`` for a
        Python function)."""
        if self.volume is None:
            return sum(count_parameters(member.network) for member in self.members)
        path = getattr(self.volume, "path", None)
        return onnx_parameters(path) if path and path.suffix == ".onnx" else None


def best_on_validation(teachers: list[TrainedModel]) -> TrainedModel:
    """The teacher with the best validation Dice.

    Raises:
        ConfigError: a teacher has no validation score (no validation case).
    """
    scores = [best_val_dice(t.path.parent) for t in teachers]
    if None in scores:
        raise ConfigError("experiment.baselines: best-teacher needs validation cases")
    return teachers[scores.index(max(scores))]
