"""Issue 27, numbers read from files: netx networks, the Lava manifest and
HDF5 links. Every number is checked before use (lowering/netx_file.py
``check_netx``, lowering/lava_manifest.py, fer2neuro/hdf5.py), so an edited
file is one line of error naming the file and the field, through the CLI,
and never a traceback, a hang, a value read from another file or a NaN
membrane. No test here starts Lava: every check fails before it would."""
from __future__ import annotations

import json
import shutil

import h5py
import nir
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import Fer2NeuroError, GraphError
from fer2neuro.lowering.lava_folder import write_artifact
from fer2neuro.lowering.lava_manifest import READABLE_VERSIONS
from fer2neuro.lowering.quantise import DECAY_UNITY, VTH_MAX
from fer2neuro.nirgraph.file import GraphInfo, read_graph
from fer2neuro.targets.loihi.netx_program import NetxProgram
from fer2neuro.targets.loihi.network import describe_netx
from cli_errors import one_line_error

SECRET = 31337.0          # the numbers in a file a netx or NIR file must not be able to read


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# --- a small valid netx network, then edited with h5py ---------------------------

def write_net(path, conv=False):
    """input(4) -> dense(3), or input(1, 4, 4) -> conv(2, 4, 4): netx's format, as slayer writes it."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        g = layers.create_group("0")
        g.create_dataset("type", (1,), "S10", [b"input"])
        g.create_dataset("shape", data=np.array([1, 4, 4] if conv else [4]))
        g = layers.create_group("1")
        if conv:
            g.create_dataset("type", (1,), "S10", [b"conv"])
            g.create_dataset("shape", data=np.array([2, 4, 4]))
            g.create_dataset("weight", data=np.full((2, 1, 3, 3), 20))
            for key in ("stride", "padding", "dilation"):
                g.create_dataset(key, data=np.array([1, 1]))
            g.create_dataset("groups", data=1)
        else:
            g.create_dataset("type", (1,), "S10", [b"dense"])
            g.create_dataset("shape", data=np.array([3]))
            g.create_dataset("weight", data=np.arange(12).reshape(3, 4) * 10 - 40)
        n = g.create_group("neuron")
        n.create_dataset("type", data=b"CUBA")
        for key, value in (("iDecay", 1024), ("vDecay", 256), ("vThMant", 30), ("refDelay", 1)):
            n.create_dataset(key, data=np.int64(value))
    return path


def edit(path, key, value):
    """Replace dataset ``key`` of the HDF5 file by ``value``: data, a link, or
    a callable that makes the new object (``make(file, key)``)."""
    with h5py.File(path, "a") as f:
        if key in f or isinstance(f.get(key, getlink=True), (h5py.SoftLink, h5py.ExternalLink)):
            del f[key]
        if isinstance(value, (h5py.SoftLink, h5py.ExternalLink)):
            f[key] = value
        elif callable(value):
            value(f, key)
        else:
            f.create_dataset(key, data=value)
    return path


@pytest.fixture()
def secret(tmp_path):
    """A file holding secret-looking numbers, at an absolute path."""
    path = tmp_path / "secret.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.full((3, 4), SECRET)
        f["flat"] = np.full(12, SECRET)
    return path


def virtual(source):
    def make(f, key):
        layout = h5py.VirtualLayout(shape=(3, 4), dtype="f8")
        layout[:] = h5py.VirtualSource(str(source), "w", shape=(3, 4))
        f.create_virtual_dataset(key, layout)
    return make


def external_storage(raw):
    def make(f, key):
        np.full((3, 4), SECRET).tofile(raw)
        f.create_dataset(key, shape=(3, 4), dtype="f8", external=[(str(raw), 0, 96)])
    return make


def declared_huge(f, key):
    """A dataset that declares 2^27 values and stores none (a file of a few kB)."""
    f.create_dataset(key, shape=(1 << 14, 1 << 13), dtype="f8", chunks=(64, 64))


def hard_link_cycle(f, key):
    f[key] = np.ones((3, 4))
    f.create_group("extra")["root"] = f["/"]            # a group holding the file's root: a cycle


def soft_loop(f, key):
    f[key] = h5py.SoftLink(key + "_b")
    f[key + "_b"] = h5py.SoftLink(key)


# field edited, its new value, what the one line says (after the file name)
CASES = {
    "weights as strings": (False, "layer/1/weight", np.array([[b"w"] * 4] * 3), "/layer/1/weight holds text"),
    "gigantic shape": (False, "layer/1/shape", np.array([10 ** 12]), "/layer/1/shape is 1000000000000"),
    "negative shape": (False, "layer/1/shape", np.array([-5]), "/layer/1/shape is -5, outside 1.."),
    "shape of 2^72 neurons": (True, "layer/1/shape", np.array([1 << 24] * 3), "is 4722366482869645213696 neurons"),
    "huge declared dataset": (False, "layer/1/weight", declared_huge, "/layer/1/weight declares 134217728 values"),
    "stride 0": (True, "layer/1/stride", np.array([0, 1]), "/layer/1/stride is 0, outside 1..127"),
    "dilation 0": (True, "layer/1/dilation", np.array([1, 0]), "/layer/1/dilation is 0"),
    "padding -1": (True, "layer/1/padding", np.array([-1, 0]), "/layer/1/padding is -1"),
    "groups 0": (True, "layer/1/groups", 0, "/layer/1/groups is 0"),
    "vThMant -5": (False, "layer/1/neuron/vThMant", -5, "/layer/1/neuron/vThMant is -5, outside 0..131071"),
    "vThMant 2^40": (False, "layer/1/neuron/vThMant", 2 ** 40, "/layer/1/neuron/vThMant is 1099511627776"),
    "vDecay 99999": (False, "layer/1/neuron/vDecay", 99999, "/layer/1/neuron/vDecay is 99999, outside 0..4096"),
    "iDecay -1": (False, "layer/1/neuron/iDecay", -1, "/layer/1/neuron/iDecay is -1, outside 0..4096"),
    "weight exponent 40": (False, "layer/1/fer2neuro_weight_exp", 40, "/layer/1/fer2neuro_weight_exp is 40"),
    "weight 2^40": (False, "layer/1/weight", np.full((3, 4), 2.0 ** 40), "/layer/1/weight holds 1099511627776"),
    "complex weights": (False, "layer/1/weight", np.ones((3, 4)) + 1j, "/layer/1/weight holds complex128"),
    "soft-link loop": (False, "layer/1/weight", soft_loop, "/layer/1/weight is a soft link"),
    "soft link to itself": (False, "layer/1/weight", h5py.SoftLink("/layer/1/weight"), "is a soft link"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_edited_netx_file_is_one_line_in_inspect_and_simulate(case, tmp_path):
    conv, key, value, message = CASES[case]
    path = edit(write_net(tmp_path / "edited.net", conv=conv), key, value)
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 4, 4) if conv else (3, 4), np.uint8))
    one_line_error(invoke("inspect", path), "edited.net: ", message)
    for target in ("loihi", "lava-fixed"):          # lava-fixed refuses before Lava starts
        one_line_error(invoke("simulate", path, "--target", target, "--input", tmp_path / "x.npy",
                              "--out", tmp_path / "y.npz"), "edited.net: ", message)
    assert not (tmp_path / "y.npz").exists()


def test_a_hard_link_cycle_is_walked_once(tmp_path):
    """A group linked into its own subgroup is legal HDF5: the walk ends, the file loads."""
    path = edit(write_net(tmp_path / "cycle.net"), "layer/1/weight", hard_link_cycle)
    assert len(NetxProgram(path).layers) == 1
    assert invoke("inspect", path).exit_code == 0


@pytest.mark.parametrize("how", ["external link", "virtual dataset", "external storage"])
def test_values_from_another_file_are_refused_not_read(how, secret, tmp_path):
    raw = tmp_path / "secret.bin"
    value = {"external link": h5py.ExternalLink(str(secret), "/w"), "virtual dataset": virtual(secret),
             "external storage": external_storage(raw)}[how]
    path = edit(write_net(tmp_path / "linked.net"), "layer/1/weight", value)
    with h5py.File(path, "r") as f:                 # the threat is real: h5py reads the other file silently
        assert (f["layer/1/weight"][()] == SECRET).all()
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.uint8))
    for args in (("inspect", path),
                 ("simulate", path, "--target", "loihi", "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npz")):
        line = one_line_error(invoke(*args), "linked.net: /layer/1/weight", how.split()[-1])
        assert "31337" not in line


def nir_graph():
    """Input(4) -> Affine -> LIF(3) -> Affine -> LIF(2) -> Output, fer2neuro metadata."""
    ones = np.ones
    nodes = {"input": nir.Input(input_type=np.array([4])),
             "fc1": nir.Affine(weight=np.full((3, 4), 0.6), bias=np.zeros(3)),
             "lif1": nir.LIF(tau=2 * ones(3), r=ones(3), v_leak=0 * ones(3), v_threshold=ones(3)),
             "fc2": nir.Affine(weight=np.full((2, 3), 0.8), bias=np.zeros(2)),
             "lif2": nir.LIF(tau=2 * ones(2), r=ones(2), v_leak=0 * ones(2), v_threshold=ones(2)),
             "output": nir.Output(output_type=np.array([2]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    meta = GraphInfo(dt=1.0, timesteps=4, encoder="poisson", class_names=("a", "b")).to_metadata()
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


@pytest.mark.parametrize("how", ["external link", "soft link"])
def test_a_nir_file_with_a_link_is_refused_before_nir_reads_it(how, secret, tmp_path):
    path = tmp_path / "G.nir"
    nir.write(path, nir_graph())
    key = "node/nodes/fc1/weight"
    link = h5py.ExternalLink(str(secret), "/w") if how == "external link" else h5py.SoftLink("/" + key)
    edit(path, key, link)
    if how == "external link":           # without the check, nir.read takes the other file's numbers
        assert (nir.read(path).nodes["fc1"].weight == SECRET).all()
    with pytest.raises(GraphError, match=f"/node/nodes/fc1/weight is an? {how}"):
        read_graph(path)
    np.save(tmp_path / "x.npy", np.zeros((4, 4)))
    for args in (("inspect", path),
                 ("simulate", path, "--target", "nir", "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npz")):
        assert "31337" not in one_line_error(invoke(*args), "G.nir: /node/nodes/fc1/weight", how)


# --- the fuzz: every netx field with bad values --------------------------------

BAD_VALUES = {
    "nan": np.nan, "inf": -np.inf, "negative": -1, "zero": 0, "2^40": 2 ** 40, "int64 min": np.iinfo(np.int64).min,
    "half": 1.5, "text": b"x", "texts": np.array([b"a", b"b"]), "empty": np.zeros(0), "seven": np.ones(7),
    "complex": np.array([1 + 1j]), "record": np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]),
    "no value": h5py.Empty("f8"), "bool": True, "uint64 max": np.uint64(2 ** 64 - 1),
}
FIELDS = [(False, key) for key in ("layer/0/shape", "layer/1/shape", "layer/1/type", "layer/1/weight", "layer/1/bias",
                                   "layer/1/delay", "layer/1/fer2neuro_weight_exp", "layer/1/neuron/type",
                                   "layer/1/neuron/vThMant", "layer/1/neuron/vDecay", "layer/1/neuron/iDecay")] + \
         [(True, key) for key in ("layer/1/weight", "layer/1/stride", "layer/1/padding", "layer/1/dilation",
                                  "layer/1/groups", "layer/1/bias")]


def loaded_sanely(program: NetxProgram) -> None:
    """What a file that loads may hold: every number in Lava's ranges."""
    for layer in program.layers:
        assert all(1 <= s <= 1 << 24 for s in layer.shape)
        assert 0 <= layer.vth <= VTH_MAX and 0 <= layer.dv <= DECAY_UNITY and 0 <= layer.du + 1 <= DECAY_UNITY
        assert -8 <= layer.weight_exp <= 16
        for array in (layer.weight, layer.bias, layer.delays):
            if array is not None:
                assert array.dtype == np.int64 and np.abs(array).max(initial=0) < 1 << 31
        if layer.conv:
            assert min(layer.conv["stride"]) >= 1 and min(layer.conv["dilation"]) >= 1
            assert min(layer.conv["padding"]) >= 0 and layer.conv["groups"] >= 1


def test_fuzz_every_netx_field_with_bad_values(tmp_path):
    """Each field of a valid file replaced by each bad value: the file loads
    (then every number is in range) or is refused with one line naming the
    field; nothing else (no other exception, no wrong number). The ranges
    themselves are what netx and Lava's models take, and must refuse."""
    base = {conv: write_net(tmp_path / f"base{int(conv)}.net", conv=conv) for conv in (False, True)}
    refused = loaded = 0
    for conv, key in FIELDS:
        for label, value in BAD_VALUES.items():
            path = tmp_path / "fuzz.net"
            shutil.copy(base[conv], path)
            edit(path, key, value)
            outcomes = []
            for read in (lambda: loaded_sanely(NetxProgram(path)), lambda: describe_netx(path)):
                try:
                    read()
                    outcomes.append("ok")
                except Fer2NeuroError as exc:
                    assert str(exc).startswith(str(path)) and "\n" not in str(exc), (key, label, exc)
                    outcomes.append(str(exc))
            if outcomes[1] != "ok":                  # inspect refuses only what no target may read
                assert outcomes[0] == outcomes[1], (key, label, outcomes)
                assert "/" + key in outcomes[1], (key, label, outcomes)
            refused += outcomes[0] != "ok"
            loaded += outcomes[0] == "ok"
            in_range = label in ("zero", "bool") or (label == "half" and key.endswith("weight"))
            if key.split("/")[-1] in ("vThMant", "vDecay", "iDecay", "shape", "stride", "dilation") and \
                    not in_range:
                assert outcomes[1] != "ok", (key, label)       # refused by the check itself, not later
    assert refused > 200 and loaded > 5


def group(f, key):
    f.create_group(key)["real"] = np.ones((3, 4))


@pytest.mark.parametrize("key, value, message", [
    ("layer/1/neuron", 5, "/layer/1/neuron is a dataset"),
    ("layer/1/weight", group, "/layer/1/weight is a group"),
    ("layer/1/type", group, "/layer/1/type is a group"),
    ("layer/1/neuron/type", group, "/layer/1/neuron/type is a group"),
    ("layer/1", 7, "/layer/1 is not a group"),
    ("layer", 3, "no 'layer' group"),
])
def test_a_field_of_the_wrong_kind_is_one_line(key, value, message, tmp_path):
    path = edit(write_net(tmp_path / "kind.net"), key, value)
    for read in (NetxProgram, describe_netx):
        with pytest.raises(GraphError, match=message):
            read(path)


def test_fuzz_bytes_flipped_anywhere_in_a_netx_file(tmp_path):
    """1 to 3 random bytes of a valid file changed, 150 times: HDF5's own
    structures (group heaps, B-trees, datatypes, link names) break in ways
    h5py reports as RuntimeError, TypeError or UnicodeDecodeError; each is
    one line, or the file loads with every number in range."""
    data = write_net(tmp_path / "base.net", conv=True).read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "flipped.net"
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(150):
        flipped = bytearray(data)
        for at in rng.integers(0, len(data), rng.integers(1, 4)):
            flipped[at] = rng.integers(0, 256)
        path.write_bytes(bytes(flipped))
        try:
            loaded_sanely(NetxProgram(path))
            describe_netx(path)
            outcomes["loaded"] += 1
        except Fer2NeuroError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 20 and outcomes["loaded"] > 20, outcomes


# --- inspect's verdict is the target's own ------------------------------------------

def test_inspect_says_a_netx_file_runs_where_simulate_runs_it(tmp_path):
    path = write_net(tmp_path / "ok.net")
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    verdicts = json.loads(result.output)["targets"]
    assert verdicts["loihi"] == {"runs": True, "reason": None} and verdicts["lava-fixed"]["runs"]
    assert not verdicts["nir"]["runs"] and "not a netx file" in verdicts["nir"]["reason"]
    np.save(tmp_path / "x.npy", np.ones((3, 4), np.uint8))
    assert invoke("simulate", path, "--target", "loihi", "--input", tmp_path / "x.npy",
                  "--out", tmp_path / "y.npz").exit_code == 0
    # a file loihi cannot run: inspect gives the reason simulate stops with
    sdnn = edit(write_net(tmp_path / "sdnn.net"), "layer/1/neuron/type", b"SDNN")
    verdicts = json.loads(invoke("inspect", sdnn, "--json").output)["targets"]
    line = one_line_error(invoke("simulate", sdnn, "--target", "loihi", "--input", tmp_path / "x.npy",
                                 "--out", tmp_path / "z.npz"))
    assert not verdicts["loihi"]["runs"] and line == f"Error: {verdicts['loihi']['reason']}"


# --- the Lava manifest: a schema with versions ------------------------------------

@pytest.fixture(scope="module")
def lava_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lava") / "lava"
    write_artifact(nir_graph(), folder)
    return folder


SPIKES = np.tile([[1.0, 0, 1, 0], [0, 1, 0, 1]], (2, 1))     # T 4, 4 inputs: what the folder runs


MANIFEST_CASES = {
    "dt abc": (lambda m: m.update(dt="abc"), '"dt" is "abc"; expected a finite number > 0'),
    "dt 0": (lambda m: m.update(dt=0), '"dt" is 0'),
    "no input": (lambda m: m.pop("input"), 'no "input"'),
    "no layers": (lambda m: m.pop("layers"), 'no "layers"'),
    "a list": (lambda m: ("whole", [m]), "not a fer2neuro Lava manifest"),
    "no scale": (lambda m: m["layers"][0].pop("scale"), 'layers[0] has no "scale"'),
    "scale x": (lambda m: m["layers"][1].update(scale="x"), 'layers[1].scale is "x"'),
    "scale NaN": (lambda m: m["layers"][0].update(scale=float("nan")), "layers[0].scale is nan"),
    "scale 0": (lambda m: m["layers"][0].update(scale=0), "layers[0].scale is 0; expected a finite number > 0"),
    "scale 1e400": (lambda m: m["layers"][0].update(scale=float("inf")), "layers[0].scale is inf"),
    "vth text": (lambda m: m["layers"][0].update(vth="10"), 'layers[0].vth is "10"'),
    "a layer a list": (lambda m: m["layers"].__setitem__(0, [1]), "layers[0] is [1]; expected an object"),
    "format_version 99": (lambda m: m.update(format_version=99),
                          "format_version 99 (written by a newer fer2neuro); this fer2neuro reads format_version 1"),
    "format_version 1.0": (lambda m: m.update(format_version=1.0), "format_version 1.0;"),
    "no format_version": (lambda m: m.pop("format_version"), "format_version null;"),
    "encoder and input disagree": (lambda m: m.update(input="bias"), 'encoder "poisson" with input "bias"'),
    "class names": (lambda m: m.update(class_names=[1, 2]), '"class_names" is [1, 2]'),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_an_edited_manifest_is_one_line_naming_the_field(case, lava_folder, tmp_path):
    folder = tmp_path / "lava"
    shutil.copytree(lava_folder, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change, message = MANIFEST_CASES[case]
    replaced = change(manifest)            # edits the manifest, or gives ("whole", what replaces it)
    whole = replaced[1] if isinstance(replaced, tuple) and replaced[0] == "whole" else manifest
    (folder / "manifest.json").write_text(json.dumps(whole))
    np.save(tmp_path / "x.npy", SPIKES)
    one_line_error(invoke("inspect", folder), "manifest.json: ", message)
    for target in ("loihi", "lava-fixed"):
        one_line_error(invoke("simulate", folder, "--target", target, "--input", tmp_path / "x.npy",
                              "--out", tmp_path / "y.npz"), "manifest.json: ", message)
    assert not (tmp_path / "y.npz").exists()


@pytest.mark.parametrize("key, value, message", [
    ("layer/1/neuron/vThMant", -5, "/layer/1/neuron/vThMant is -5"),
    ("layer/1/weight", h5py.SoftLink("/layer/0/weight"), "/layer/1/weight is a soft link"),
])
def test_an_edited_network_net_in_a_lava_folder_is_refused_by_both_fixed_point_targets(key, value, message,
                                                                                         lava_folder, tmp_path):
    folder = tmp_path / "lava"
    shutil.copytree(lava_folder, folder)
    edit(folder / "network.net", key, value)
    np.save(tmp_path / "x.npy", SPIKES)
    one_line_error(invoke("inspect", folder), "network.net: ", message)
    for target in ("loihi", "lava-fixed"):          # lava-fixed: checked before lava-dl reads the file
        one_line_error(invoke("simulate", folder, "--target", target, "--input", tmp_path / "x.npy",
                              "--out", tmp_path / "y.npz"), "network.net: ", message)


def test_what_export_writes_passes_the_schema_and_runs(lava_folder, tmp_path):
    manifest = json.loads((lava_folder / "manifest.json").read_text())
    assert manifest["format_version"] in READABLE_VERSIONS
    x = (np.random.default_rng(0).random((2, 4, 4)) < 0.5).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    result = invoke("simulate", lava_folder, "--target", "loihi", "--input", tmp_path / "x.npy",
                    "--out", tmp_path / "y.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "y.npz") as data:
        assert all(np.isfinite(data[k]).all() for k in data.files)


def test_a_manifest_that_is_not_json_text(lava_folder, tmp_path):
    folder = tmp_path / "lava"
    shutil.copytree(lava_folder, folder)
    for data, message in ((b"\xff\xfe{", "not UTF-8"), (b"[" * 100000, "not valid JSON"),
                          (b'{"format": "fer2neuro.lava", "dt": ' + b"9" * 5000 + b"}", "not valid JSON"),
                          (b" " * (1 << 24) + b"{}", "a manifest is a few kB")):
        (folder / "manifest.json").write_bytes(data)
        one_line_error(invoke("inspect", folder), "manifest.json: ", message)

