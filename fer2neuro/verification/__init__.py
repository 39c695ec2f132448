"""Cross-backend verification (SPEC §4): the float64 snnTorch model is the
reference; every backend's spikes are compared with it layer by layer
(compare.py), reported (run.py) and drawn (plots.py)."""
