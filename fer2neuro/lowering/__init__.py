"""NIR graph -> what a backend runs or an artifact holds, in one neutral
place: exporters write through it, targets read from it, and neither imports
the other (docs/architecture.md).

    lava_plan.py    NIR chain -> Lava layers (synapse + CUBA neuron), float
    quantise.py     Lava layers -> Loihi integers (weights, biases, vth, decays)
    netx_file.py    quantised layers <-> lava-dl netx HDF5 (``network.net``)
    lava_folder.py  the exported Lava folder: network.net + model.nir + manifest
    lava_manifest.py  the folder's manifest.json: its schema, with versions
    onnx_graph.py   NIR graph -> ONNX model unrolled over T
"""
