#!/usr/bin/env bash
# The predict-only install: prokd without extras in a fresh venv, torch absent, segments a
# NIfTI volume and a DICOM series (to NIfTI and to DICOM SEG) with the bundled model.
# Run by `make test`; VENV (default .venv-base) is made anew each time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-base}"
PYTHON="${PYTHON:-python3}"
DATA="${PROKD_SHARED_DATA:-../shared/data}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet .
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "base install: torch is installed, but the base install must not bring it" >&2
    exit 1
fi
BIN="$VENV/bin/prokd"
"$BIN" models prostate-t2
"$BIN" predict prostate-t2 "$DATA/real/prostate158/002/t2.nii.gz" "$OUT/nifti.nii.gz"
SERIES="$DATA/dicom/ProstateX/ProstateX-0000"
"$BIN" predict prostate-t2 "$SERIES" "$OUT/dicom.nii.gz"
"$BIN" predict prostate-t2 "$SERIES" "$OUT/seg.dcm"
"$BIN" inspect "$SERIES"
# A command of the training extra says which extra to install, in one line, exit 2.
set +e
"$BIN" train configs/demo.yaml --out "$OUT/train" 2>"$OUT/train.err"
code=$?
set -e
if [ "$code" -ne 2 ] || ! grep -q "pip install 'prokd\[train\]'" "$OUT/train.err"; then
    echo "base install: prokd train did not name the train extra (exit $code):" >&2
    cat "$OUT/train.err" >&2
    exit 1
fi
for f in nifti.nii.gz dicom.nii.gz seg.dcm; do
    test -s "$OUT/$f" || { echo "base install: $f not written" >&2; exit 1; }
done
echo "base install: predict on NIfTI and DICOM without torch: ok"
