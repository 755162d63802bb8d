# Two entry points: `make demo` and `make test`. Both create or refresh .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TAPS_STAMP := $(VENV)/.taps
DEMO_DATA ?= data/phantom

.PHONY: demo test venv taps test-tools orthanc prostate-t2 prostate-localiser study-data loso-bank base-check clean

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

# The tests' independent RTSTRUCT reader: rt-utils with --no-deps, since it declares the GUI
# build of OpenCV (libGL); the test extra brings the headless one it runs on.
RT_UTILS_STAMP := $(VENV)/.rt-utils
test-tools: $(RT_UTILS_STAMP) orthanc

$(RT_UTILS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps rt-utils==1.2.7
	touch $(RT_UTILS_STAMP)

# A real Orthanc for the DICOM node's tests (Debian package, started by the tests on
# loopback ports). Installed where missing and the machine allows it (root with apt-get, as
# in CI); elsewhere those tests skip, saying why.
orthanc:
	@if command -v Orthanc >/dev/null || test -x /usr/sbin/Orthanc; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc >/dev/null; } || \
		echo "make test: apt-get could not install Orthanc; the DICOM node tests will skip (fail under CI)"; \
	else echo "make test: Orthanc is not installed and cannot be here (needs root and apt-get);" \
		"the DICOM node tests will skip (fail under CI)"; fi

# Rebuilds the bundled model from the real data in ../shared/data, TAPS teaching
# (docs/model-card.md). Not part of demo or test: the committed file is what ships.
prostate-t2: $(TAPS_STAMP)
	$(BIN)/prokd train configs/prostate-t2.yaml --out runs/prostate-t2
	$(BIN)/prokd export runs/prostate-t2 --format onnx --overwrite \
		--out src/prokd/inference/bundled/prostate-t2.onnx

# The data the localiser and the leave-one-source-out study train and test on, written or
# linked (never copied) under data/: synthetic pelvis images from the HipMRI label maps, the
# phantom, and the unlabelled real scans with AI-made reference masks as six-site layouts:
# data/ai-labelled (the localiser's) and data/loso-references (the study's test references;
# ProstateX-0000 left out: it chose settings, so it is exploratory).
SHARED := $(abspath ../shared/data)
AI_LABELLED := data/ai-labelled
LOSO_REFERENCES := data/loso-references
study-data: $(STAMP)
	test -f data/hipmri-synth/hipmri-synth/Case_004_Week0.nii.gz || \
		$(BIN)/prokd synth-pelvis $(SHARED)/hipmri-labels data/hipmri-synth
	test -f $(DEMO_DATA)/phantom.json || $(BIN)/prokd phantom $(DEMO_DATA)
	for d in $(AI_LABELLED) $(LOSO_REFERENCES); do mkdir -p $$d/prostatex $$d/prostate3t; done
	for c in ProstateX-0000 ProstateX-0001_s6; do \
		ln -sf $(SHARED)/unlabeled/prostatex/$$c/t2.nii.gz $(AI_LABELLED)/prostatex/$$c.nii.gz; \
		ln -sf $(SHARED)/ai-references/prostatex/$$c/gland_bosma22b.nii.gz \
			$(AI_LABELLED)/prostatex/$${c}_segmentation.nii.gz; done
	for c in 0001 0002 0003 0004; do \
		ln -sf $(SHARED)/unlabeled/prostate3t/Prostate3T-03-$$c/t2.nii.gz \
			$(AI_LABELLED)/prostate3t/Prostate3T-03-$$c.nii.gz; \
		ln -sf $(SHARED)/ai-references/prostate3t/Prostate3T-03-$$c/gland_vesal.nii.gz \
			$(AI_LABELLED)/prostate3t/Prostate3T-03-$${c}_segmentation.nii.gz; done
	ln -sf $(abspath $(AI_LABELLED))/prostatex/ProstateX-0001_s6*.nii.gz $(LOSO_REFERENCES)/prostatex/
	ln -sf $(abspath $(AI_LABELLED))/prostate3t/*.nii.gz $(LOSO_REFERENCES)/prostate3t/

# Rebuilds the bundled localiser (docs/model-card.md) on the study data above and the
# labelled real scans.
prostate-localiser: study-data
	$(BIN)/prokd train configs/prostate-localiser.yaml --out runs/prostate-localiser
	$(BIN)/prokd export runs/prostate-localiser --format onnx --overwrite \
		--out src/prokd/inference/bundled/prostate-localiser.onnx

# Leave one source out with TAPS's view bank (configs/studies/loso-bank.yaml): the bank
# first (resumable; 46 minutes of TAPS at one thread beside other work on 2 cores,
# 2026-12-08), then the study (resumable, also across sessions: see below). The
# study's cells read the bank as it is: 2 views a volume, as its published cells were made.
# A finished cell is refused when its bank has grown, so the larger bank of the bank-size
# regime (3 views a volume) is another folder, made from a copy of the first. The study takes
# longer than a session: its finished cells and fold localisers are kept (and restored from)
# docs/results/loso-bank-cells, committed.
loso-bank: study-data $(TAPS_STAMP)
	$(BIN)/prokd bank configs/bank-real.yaml --teacher taps --out runs/bank-taps \
		--views-per-volume 2 --threads 1
	test -d runs/bank-taps-3 || cp -r runs/bank-taps runs/bank-taps-3
	$(BIN)/prokd bank configs/bank-real.yaml --teacher taps --out runs/bank-taps-3 \
		--views-per-volume 3 --threads 1
	$(BIN)/prokd study configs/studies/loso-bank.yaml --out runs/loso-bank --publish docs/results \
		--records docs/results/loso-bank-cells

# The synthetic benchmark (generated once), then the whole protocol on it.
demo: $(STAMP)
	test -f $(DEMO_DATA)/phantom.json || $(BIN)/prokd phantom $(DEMO_DATA) --preview
	$(BIN)/prokd experiment configs/demo.yaml --data $(DEMO_DATA) --out runs/demo --jobs 2

# The predict-only install (no extras) in a fresh .venv-base: predicts NIfTI and DICOM
# with torch absent.
base-check:
	PYTHON=$(PYTHON) bash tools/check_base_install.sh

# pytest exits 5 when it collects no test: that is a failed run, not a pass. The tests
# include the TAPS adapter's, the RTSTRUCT reader's and the DICOM node's against Orthanc, so
# TAPS, rt-utils and Orthanc are installed first; then the base-install check.
test: $(STAMP) $(TAPS_STAMP) test-tools
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi
	$(MAKE) base-check

clean:
	rm -rf $(VENV) .venv-base data runs
