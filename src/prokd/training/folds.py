"""Leave one source out in a study file (``folds:``): each regime runs once per held-out
source, and each fold may place its grids with a localiser trained without that source.

A study file's ``folds`` section::

    folds:
      sources: [prostate158, msd, prostatex, prostate3t]
      localiser: ../prostate-localiser.yaml  # optional: one localiser per fold
      exploratory: [prostate158]  # optional: folds whose volumes helped choose a setting
      qc: student-kd-p1  # optional: the model whose QC level is chosen per fold

turns every regime ``R`` into the regimes ``R-<source>`` (``split.test_site: <source>``:
no volume of that source trains, validates or places anything; see
:func:`prokd.training.runs.prepare_data`) and a pool ``R`` of them. With ``localiser``, the
fold's localiser is that config trained with ``data.exclude_sites: [<source>]`` and
exported to ``<study out>/localisers/<source>.onnx``, and the fold's cells place their
grids with it (``preprocess.localiser``). Folds named ``exploratory`` (their volumes helped
choose a setting) are marked so in every table of the study's report, and so are the pools
that hold them. With ``qc``, that model's QC strictness level is chosen per fold on the
fold's validation volumes and judges its test volumes (:mod:`prokd.training.fold_qc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prokd.errors import ConfigError
from prokd.inference.export import export_model
from prokd.inference.trained import load_trained_model
from prokd.training.config import Config, load_config
from prokd.training.single_run import train_single

FOLD_KEYS = ("sources", "localiser", "exploratory", "qc")


@dataclass(frozen=True)
class Folds:
    """The held-out sources of a study and the config of each fold's localiser."""

    sources: tuple[str, ...]
    localiser: Path | None = None
    exploratory: tuple[str, ...] = ()  # sources whose volumes helped choose a setting
    qc: str | None = None  # the model (step name) whose QC level is nested in the folds

    def regime(self, regime: str, source: str) -> str:
        """The name of a regime's fold."""
        return f"{regime}-{source}"

    def overrides(self, source: str) -> dict[str, Any]:
        """What a fold changes in a regime's config."""
        return {"split": {"test_site": source, "test_case": None}}


def parse_folds(values: Any, study_file: Path) -> Folds | None:
    """A study file's ``folds`` section (``None`` when absent).

    Raises:
        ConfigError: ``<file>: folds.<key>: <problem>``.
    """
    if values is None:
        return None
    where = f"{study_file}: folds"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping with sources (and localiser)")
    unknown = sorted(set(values) - set(FOLD_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(FOLD_KEYS)})")
    sources = values.get("sources")
    if not (isinstance(sources, list) and len(sources) >= 2):
        raise ConfigError(f"{where}.sources: expected a list of at least two source names")
    if len(set(sources)) != len(sources):
        raise ConfigError(f"{where}.sources: a source is named twice")
    exploratory = values.get("exploratory") or []
    if not (isinstance(exploratory, list) and set(exploratory) <= set(sources)):
        raise ConfigError(f"{where}.exploratory: expected a list of the fold sources")
    qc = values.get("qc")
    if qc is not None and not (isinstance(qc, str) and qc.startswith("student-")):
        raise ConfigError(f"{where}.qc: expected a student's step name, got {qc!r}")
    localiser = values.get("localiser")
    path = study_file.parent / str(localiser) if localiser else None
    if path is not None:
        load_config(path)  # a clear error for a missing or invalid localiser config
    return Folds(tuple(str(s) for s in sources), path, tuple(str(s) for s in exploratory), qc)


def localiser_config(folds: Folds, source: str) -> Config:
    """The localiser's config for the fold that holds ``source`` out."""
    assert folds.localiser is not None
    config = load_config(folds.localiser)
    excluded = tuple(dict.fromkeys([*config.data.exclude_sites, source]))
    return config.replace(data={"exclude_sites": excluded})


def fold_localiser_file(out: str | Path, source: str) -> Path:
    """Where the localiser of the fold that holds ``source`` out is exported."""
    return Path(out) / "localisers" / f"{source}.onnx"


def train_fold_localisers(
    folds: Folds, sources: list[str], out: str | Path, progress: bool = True
) -> dict[str, Path]:
    """Train (or resume, or find done) the localiser of every fold in ``sources`` and export
    it; returns source -> exported file."""
    files = {}
    for source in sources:
        target = fold_localiser_file(out, source)
        if not target.exists():
            if progress:
                print(f"study: localiser without {source}", flush=True)
            run = Path(out) / "localisers" / source
            resume = (run / "last.pt").exists()
            train_single(localiser_config(folds, source), run, resume, progress)
            export_model(load_trained_model(run), "onnx", target)
        files[source] = target
    return files
