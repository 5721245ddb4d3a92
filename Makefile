# posternet: every target installs what it needs first (`setup`), so on a
# fresh machine `make demo` and `make test` are the whole set-up.
# Variables can be set on the command line: make records CSV=… IMAGES=… OUT=…

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Synthetic data in the tutorial's format (`make data`).
DATA ?= data/synthetic
N ?= 7254
SEED ?= 0

# The converter (`make records`): the tutorial's CSV and Images/ folder.
CSV ?= $(DATA)/multi_label_train.csv
IMAGES ?= $(DATA)/Images
OUT ?= records
STORE_SIZE ?=
# jpeg (default) or raw: uint8 pixels, nothing to decode, ~10x the disk.
STORE_FORMAT ?=
RECORDS_FLAGS ?=

.PHONY: setup data records verify test demo demo-records clean bench \
	bench-400 gpu-check tensorboard FORCE

setup: $(STAMP)

# Rebuilt only when the dependency list changes; the editable install means
# code edits need no reinstall.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

data: setup
	$(PY) -m posternet.synthetic --out=$(DATA) --num_posters=$(N) --seed=$(SEED)

records: setup
	$(PY) -m tools.make_records --csv=$(CSV) --images=$(IMAGES) --out=$(OUT) \
		$(if $(STORE_SIZE),--store_size=$(STORE_SIZE)) \
		$(if $(STORE_FORMAT),--store_format=$(STORE_FORMAT)) $(RECORDS_FLAGS)

verify: setup
	$(PY) -m tools.make_records --verify=$(OUT)

# PRECISION=float32 or mixed_bfloat16: what --precision=auto resolves to in
# every test (CPUs differ: the suite must pass under both).
PRECISION ?=
test: setup
	$(if $(PRECISION),POSTERNET_PRECISION=$(PRECISION)) $(PY) -m pytest -q tests

# The prefetch benchmark: synthetic records at 128x128 in bench/work (made
# once), every variant in its own process; the table on stdout, the numbers
# in bench/bench.json. BENCH_FLAGS adds flags, e.g.
# BENCH_FLAGS='--records=/tmp/real128 --images=path/Images', or
# BENCH_FLAGS=--quick for a smoke test (seconds; its numbers mean nothing,
# and go to bench/quick.json, never over a measurement).
BENCH_FLAGS ?=

bench: setup
	$(PY) -m tools.prefetch_bench $(BENCH_FLAGS)

# The same table at the tutorial's size: posters stored at up to 400x400 as
# JPEG and as raw records (also GZIP/ZLIB-compressed), 3 runs per variant,
# medians and spread, in bench/real400.json; synthetic posters unless
# BENCH_FLAGS names real ones:
# BENCH_FLAGS='--csv=path/train.csv --images=path/Images --num_posters=2000'
bench-400: setup
	$(PY) -m tools.prefetch_bench --real_size $(BENCH_FLAGS)

# On a GPU host: seed_cnn fed from memory vs by the pipeline (JPEG, raw),
# mixed precision, XLA on and off, and the host's decode rate; < 10 min.
# GPU_CHECK_FLAGS=--tiny runs it anywhere in seconds (what the tests do).
GPU_CHECK_FLAGS ?=
gpu-check: setup
	PYTHON=$(PY) tools/gpu_check.sh $(GPU_CHECK_FLAGS)

# The main job on built-in synthetic data: posters → records → train → predict.
# The posters and records are made once and reused while up to date: each is
# made again only when missing, incomplete (the CSV and manifest.json are
# written last), older than the code that makes it, or made with other
# settings (DEMO_DATA.settings, DEMO_RECORDS.settings). The training runs
# every time (--overwrite: runs/demo is the demo's own run).
DEMO_DATA ?= data/demo
DEMO_RECORDS ?= records/demo
DEMO_N ?= 2000
DEMO_STORE_SIZE ?= 128x128
DEMO_CSV := $(DEMO_DATA)/multi_label_train.csv
DEMO_MANIFEST := $(DEMO_RECORDS)/manifest.json
DEMO_POSTER := $(DEMO_DATA)/Images/tt0000001.jpg
SYNTHETIC_CODE := $(wildcard posternet/data/synthetic*.py)
CONVERTER_CODE := $(addprefix posternet/data/,make_records.py convert.py \
	staging.py shard_writer.py \
	records.py shard_plan.py poster_files.py csv_rows.py images.py)

# $(call settings,TEXT): the target holds TEXT, rewritten only when TEXT
# changes, so that what depends on it is made again only then.
settings = @mkdir -p $(@D) && echo '$(1)' | cmp -s - $@ || echo '$(1)' > $@

$(DEMO_DATA).settings: FORCE
	$(call settings,--num_posters=$(DEMO_N) --seed=0)

$(DEMO_RECORDS).settings: FORCE
	$(call settings,--store_size=$(DEMO_STORE_SIZE))

$(DEMO_CSV): $(DEMO_DATA).settings $(SYNTHETIC_CODE) | $(STAMP)
	$(PY) -m posternet.synthetic --out=$(DEMO_DATA) --num_posters=$(DEMO_N) --seed=0

$(DEMO_MANIFEST): $(DEMO_CSV) $(DEMO_RECORDS).settings $(CONVERTER_CODE) | $(STAMP)
	$(PY) -m tools.make_records --data_dir=$(DEMO_DATA) --out=$(DEMO_RECORDS) \
		--store_size=$(DEMO_STORE_SIZE)

# The demo's posters and records alone.
demo-records: $(DEMO_MANIFEST)

demo: $(DEMO_MANIFEST)
	$(PY) -m posternet.train --flagfile=configs/demo.cfg --overwrite
	$(PY) -m posternet.predict --model=runs/demo/export $(DEMO_POSTER)
	@echo
	@echo "TensorBoard logs: runs/demo   (make tensorboard)"
	@echo "Exported model:   runs/demo/export"
	@echo "Predict any poster: $(PY) -m posternet.predict --model=runs/demo/export POSTER.jpg"

# TensorBoard for every run under runs/, on this machine only (127.0.0.1).
# For the Profile dashboard (--profile_steps): pip install -e '.[profile]'.
# posternet.board is TensorBoard without TensorFlow's start-up lines;
# TB_FLAGS adds TensorBoard flags, e.g. TB_FLAGS=--reload_interval=1.
TB_PORT ?= 6006
LOGDIR ?= runs
TB_FLAGS ?=
tensorboard: setup
	$(PY) -m posternet.board --logdir=$(LOGDIR) --host=127.0.0.1 \
		--port=$(TB_PORT) $(TB_FLAGS)

clean:
	rm -rf data records runs bench
