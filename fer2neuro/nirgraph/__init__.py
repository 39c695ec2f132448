"""The NIR graph as every stage after the model reads it: the file
(file.py), a flattened view in data-flow order (flat.py), and what its
synapse primitives compute, in float64 numpy (ops.py). Exporters, the
lowering and the targets all import from here; nothing here imports them."""
