# predjoin: `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The benchmark's comparison scripts (pandas, DuckDB) get their own environment: see
# benchmarks/requirements-peers.txt.
PEERS_VENV  := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
SAMPLES := $(CURDIR)/samples
OUT    ?= out

.PHONY: venv run test lint bench clean

venv: $(STAMP)

$(STAMP): setup.py deploy/requirements.txt benchmarks/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	# The same pins as the Flex Template image, so tests run against what ships.
	$(PY) -m pip install --quiet -r deploy/requirements.txt -r benchmarks/requirements.txt -e '.[test]'
	touch $(STAMP)

$(PEERS_STAMP): benchmarks/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-peers.txt
	touch $(PEERS_STAMP)

# The main job on the bundled samples (one run per batch prediction), DirectRunner.
run: $(STAMP)
	@for bp in binary multiclass regression; do \
	  echo "== bp-sample-$$bp"; \
	  $(VENV)/bin/predjoin \
	    --manifest samples/output/batch-prediction/bp-sample-$$bp.manifest \
	    --rebase_uri s3://predjoin-samples/=$(SAMPLES)/ \
	    --output $(OUT)/bp-sample-$$bp --format avro \
	    --direct_num_workers=2 --direct_running_mode=multi_processing || exit 1; \
	done

test: $(STAMP) $(PEERS_STAMP)
	PREDJOIN_PEERS_PYTHON=$(PEERS_VENV)/bin/python $(PY) -m pytest -q -n 2 --dist loadfile tests $(wildcard benchmarks/test_*.py)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipelines transforms tests benchmarks samples

bench: $(STAMP) $(PEERS_STAMP)
	PREDJOIN_PEERS_PYTHON=$(PEERS_VENV)/bin/python $(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) $(PEERS_VENV) $(OUT) build *.egg-info
