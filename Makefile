# `make demo` and `make test` each set up .venv first (idempotent: a stamp
# file records that the install is current, so a second run starts at once).
# Every version pin lives in requirements/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fer2neuro-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
RUN    ?= demo-run
export FER2NEURO_DATA ?= $(abspath $(wildcard ../shared/data))

.PHONY: all setup demo test benchmark clean peers
all: test

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/torch.txt requirements/constraints.txt requirements/lava.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install -q -r requirements/torch.txt
	$(PIP) install -q -c requirements/constraints.txt -e '.[test]'
	# lava-nc / lava-dl declare Python < 3.11 and pin old numpy/torch, but are pure Python:
	# install them alone; their real runtime dependencies come from pyproject.toml.
	$(PIP) install -q --no-deps --ignore-requires-python -r requirements/lava.txt
	$(BIN)/python -c "import fer2neuro.lava_compat as c; c.require_lava()"
	# The fused neuron's C kernel, built now so the first training run need not wait (never fails).
	$(BIN)/python -m fer2neuro.model.kernels
	touch $(STAMP)

# The main job on the built-in synthetic data (examples/demo.py, each step
# timed, every command run in one process): train, evaluate, figures, export to NIR, Lava and ONNX, Loihi 2
# resources, verify (every float backend spikes exactly like the trained
# model, the two fixed-point backends agree bit for bit), quantisation-aware
# fine-tuning for Loihi with its before/after line, verify again, and
# classify a face in a photo-like image on loihi.
demo: $(STAMP)
	$(BIN)/python examples/demo.py $(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	# SpikingJelly, the training-throughput peer: --no-deps (see requirements/bench.txt)
	$(PIP) install -q --no-deps -r requirements/bench.txt
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/simulate_backends.py --preset small
	$(BIN)/python benchmarks/simulate_backends.py --preset paper
	test -f $(RUN)/best.pt || $(MAKE) demo
	$(BIN)/python benchmarks/loihi_vs_lava.py --checkpoint $(RUN)/best.pt

# One virtual environment per peer NIR tool for `fer2neuro interop`, never in
# .venv (requirements/peers/README.md): Sinabs and Rockpool pin nir<=1.0.4.
PEERS      := snntorch norse sinabs rockpool spyx
TORCH_PEERS := snntorch norse sinabs rockpool
peers: $(addprefix peer-,$(PEERS))
peer-%: .peers/%/.installed ;
.PRECIOUS: .peers/%/.installed
.peers/%/.installed: requirements/peers/%.txt requirements/torch.txt
	test -x .peers/$*/bin/python || $(PYTHON) -m venv .peers/$*
	case " $(TORCH_PEERS) " in *" $* "*) .peers/$*/bin/python -m pip install -q -r requirements/torch.txt;; esac
	test ! -f requirements/peers/$*-nodeps.txt || .peers/$*/bin/python -m pip install -q --no-deps -r requirements/peers/$*-nodeps.txt
	.peers/$*/bin/python -m pip install -q -r requirements/peers/$*.txt
	.peers/$*/bin/python fer2neuro/interop/runners/$*.py version
	touch $@

clean:
	rm -rf $(VENV) $(RUN) .pytest_cache .peers
