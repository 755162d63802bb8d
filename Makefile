# Two entry points: `make demo` and `make test`. Both create or refresh .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TAPS_STAMP := $(VENV)/.taps
DEMO_DATA ?= data/phantom

.PHONY: demo test venv taps prostate-t2 base-check clean

venv: $(STAMP)

# torch goes in first from its exact pin (CPU wheel); constraints.txt keeps it there. The
# full install is the base (prediction) plus the train and test extras.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,test]'
	touch $(STAMP)

# Opt-in: TAPS (lavlab-taps, a public pretrained 3D model) as a teacher. --no-deps, since it
# declares onnxruntime-gpu (and torch) that it does not need here; its real dependencies
# (monai, nibabel, numpy, onnxruntime, scipy, torch) are already installed.
taps: $(TAPS_STAMP)

$(TAPS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps lavlab-taps==1.1.2
	touch $(TAPS_STAMP)

# Rebuilds the bundled model from the real data in ../shared/data, TAPS teaching
# (docs/model-card.md). Not part of demo or test: the committed file is what ships.
prostate-t2: $(TAPS_STAMP)
	$(BIN)/prokd train configs/prostate-t2.yaml --out runs/prostate-t2
	$(BIN)/prokd export runs/prostate-t2 --format onnx --overwrite \
		--out src/prokd/inference/bundled/prostate-t2.onnx

# The synthetic benchmark (generated once), then the whole protocol on it.
demo: $(STAMP)
	test -f $(DEMO_DATA)/phantom.json || $(BIN)/prokd phantom $(DEMO_DATA) --preview
	$(BIN)/prokd experiment configs/demo.yaml --data $(DEMO_DATA) --out runs/demo --jobs 2

# The predict-only install (no extras) in a fresh .venv-base: predicts NIfTI and DICOM
# with torch absent.
base-check:
	PYTHON=$(PYTHON) bash tools/check_base_install.sh

# pytest exits 5 when it collects no test: that is a failed run, not a pass. The tests
# include the TAPS adapter's, so TAPS is installed first; then the base-install check.
test: $(STAMP) $(TAPS_STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi
	$(MAKE) base-check

clean:
	rm -rf $(VENV) .venv-base data runs
