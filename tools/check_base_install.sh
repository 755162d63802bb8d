#!/usr/bin/env bash
# The predict-only install: prokd without extras in a fresh venv, torch absent, segments a
# NIfTI volume and a DICOM series (to NIfTI, DICOM SEG and RT Structure Set) with the bundled
# model, and `prokd serve` loads. The inputs are a phantom volume and its DICOM study, made
# with the full .venv (`prokd phantom --dicom`), and the real scans of ../shared/data where
# they exist. Run by `make test`; VENV (default .venv-base) is made anew each time.
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
SITE_PACKAGES="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "base install: the DICOM node's packages (pynetdicom, contourpy) take" \
    "$(cd "$SITE_PACKAGES" && du -sck pynetdicom* contourpy* | tail -1 | cut -f1) KiB"
BIN="$VENV/bin/prokd"
"$BIN" models prostate-t2
.venv/bin/prokd phantom "$OUT/phantom" --sites 1 --cases-per-site 1 --dicom "$OUT/phantom-dicom"
VOLUMES=("$OUT/phantom/SiteA/Case00.nii.gz")
STUDIES=("$OUT/phantom-dicom/SiteA/Case00")
if [ -d "$DATA" ]; then
    VOLUMES+=("$DATA/real/prostate158/002/t2.nii.gz")
    STUDIES+=("$DATA/dicom/ProstateX/ProstateX-0000")
else
    echo "base install: $DATA is absent; checking on the phantom only"
fi
i=0
for volume in "${VOLUMES[@]}"; do
    "$BIN" predict prostate-t2 "$volume" "$OUT/nifti$i.nii.gz"
    i=$((i + 1))
done
i=0
for study in "${STUDIES[@]}"; do
    "$BIN" predict prostate-t2 "$study" "$OUT/dicom$i.nii.gz"
    "$BIN" predict prostate-t2 "$study" "$OUT/seg$i.dcm"
    "$BIN" predict prostate-t2 "$study" "$OUT/rtstruct$i.dcm" --output-format rtstruct
    "$BIN" inspect "$study"
    i=$((i + 1))
done
# prokd serve loads without torch: its imports run before it names the missing setting.
set +e
"$BIN" serve --port 11112 --work-dir "$OUT/node" 2>"$OUT/serve.err"
code=$?
set -e
if [ "$code" -ne 2 ] || ! grep -q "destinations is required" "$OUT/serve.err"; then
    echo "base install: prokd serve did not load (exit $code):" >&2
    cat "$OUT/serve.err" >&2
    exit 1
fi
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
for f in nifti0.nii.gz dicom0.nii.gz seg0.dcm rtstruct0.dcm; do
    test -s "$OUT/$f" || { echo "base install: $f not written" >&2; exit 1; }
done
echo "base install: predict on NIfTI and DICOM (SEG, RTSTRUCT) and serve without torch: ok"
