"""A lava-dl netx network file on Lava fixed_pt (lava-dl's own
``netx.hdf5.Network``, one sample per run) against the batched ``loihi``
target: the same file, the same samples, both timed; every spike, u and v
of every layer compared.

The network: input (2, 32, 32) spikes -> conv 8 (3x3, pad 1) -> conv 16
(3x3, stride 2, pad 1) -> flatten -> dense 10, random integer weights, 20
steps, written with h5py in netx's format.

    python benchmarks/netx_speed.py [--samples 4] [--steps 20] [--record all|spikes]

The last line is ``lava_s=<s> loihi_s=<s> speedup=<ratio> bit_exact=<true|false>``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def write_network(path: Path, rng) -> None:
    def neuron(g, vth):
        n = g.create_group("neuron")
        n.create_dataset("type", data=b"CUBA")
        for key, value in (("iDecay", 1024), ("vDecay", 256), ("vThMant", vth), ("refDelay", 1)):
            n.create_dataset(key, data=np.int64(value))

    conv = {"dilation": np.array([1, 1]), "groups": 1}
    blocks = [
        ("input", {"shape": np.array([2, 32, 32])}, None),
        ("conv", {"shape": np.array([8, 32, 32]), "weight": rng.integers(-50, 60, (8, 2, 3, 3)),
                  "stride": np.array([1, 1]), "padding": np.array([1, 1]), **conv}, 150),
        ("conv", {"shape": np.array([16, 16, 16]), "weight": rng.integers(-40, 50, (16, 8, 3, 3)),
                  "stride": np.array([2, 2]), "padding": np.array([1, 1]), **conv}, 200),
        ("flatten", {"shape": np.array([16 * 16 * 16, 1, 1])}, None),
        ("dense", {"shape": np.array([10]), "weight": rng.integers(-6, 8, (10, 16 * 16 * 16))}, 200),
    ]
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        for i, (kind, fields, vth) in enumerate(blocks):
            g = layers.create_group(str(i))
            g.create_dataset("type", data=kind.encode())
            for key, value in fields.items():
                g.create_dataset(key, data=value)
            if vth is not None:
                neuron(g, vth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--record", choices=["spikes", "all"], default="all")
    args = parser.parse_args()

    from fer2neuro.targets.lava.netx_run import run_netx_file
    from fer2neuro.targets.loihi.netx_program import NetxProgram

    rng = np.random.default_rng(0)
    record_all = args.record == "all"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conv.net"
        write_network(path, rng)
        program = NetxProgram(path, emulate_overflow=True)           # wrap as Lava does, should u leave 24 bits
        x = (rng.random((args.samples, args.steps, *program.input_shape)) < 0.3).astype(np.uint8)
        program.run(x[:1, :2])                        # warm-up (torch, imports)
        start = time.perf_counter()
        ours = program.run(x, record_all=record_all)
        loihi_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = run_netx_file(program, x, record_all=record_all)
        lava_s = time.perf_counter() - start
    exact = all(np.array_equal(ours[key], theirs[key]) for key in theirs)
    for name in program.names:
        print(f"{name:<8} {str(ours[name].shape):<26} spikes {int(theirs[name].sum()):>7}")
    print(f"{args.samples} samples x {args.steps} steps, record={args.record}: Lava fixed_pt {lava_s:.2f} s "
          f"({lava_s / args.samples:.2f} s/sample), loihi {loihi_s:.3f} s")
    print(f"lava_s={lava_s:.3f} loihi_s={loihi_s:.3f} speedup={lava_s / loihi_s:.1f} "
          f"bit_exact={str(exact).lower()}")


if __name__ == "__main__":
    main()
