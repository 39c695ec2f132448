"""Issue 26: classifying faces in photographs on any target, the output
membrane rule for ties, and no silent collapse of short runs."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.data import load_splits
from fer2neuro.exporters.nir_export import graph_from_path
from fer2neuro.model.checkpoint import load_checkpoint
from fer2neuro.nirgraph.readout import Readout, decide, output_membrane
from fer2neuro.photos import Box, encode_png, face_input, find_faces, framed, scene_with_face, whole
from fer2neuro.targets import get_target
from fer2neuro.training.loop import evaluate_model
from fer2neuro.verification.run import deciding


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_png(path, image):
    path.write_bytes(encode_png(image[..., None] if image.ndim == 2 else image))
    return path


# ---- the rule ----------------------------------------------------------------------

def test_ties_go_to_the_highest_membrane_then_the_lowest_index():
    counts = np.array([[0, 0, 0], [2, 2, 1], [0, 3, 0], [1, 1, 0]])
    membrane = np.array([[0.1, 0.5, 0.2], [0.1, -0.2, 5.0], [9.0, 0.0, 9.0], [0.3, 0.3, 0.9]])
    assert decide(counts, membrane).tolist() == [1, 0, 1, 0]   # the 5.0 is not among the tied classes
    assert decide(counts).tolist() == [0, 0, 1, 0]
    assert decide(torch.tensor(counts), torch.tensor(membrane)).tolist() == [1, 0, 1, 0]


def test_the_output_membrane_by_hand():
    currents = np.ones((4, 1, 2)) * np.array([0.6, 1.5])
    spikes = np.zeros((4, 1, 2))
    spikes[2, 0, 1] = 1                                      # the second neuron spiked at step 3
    # v' = v + (I - v) / 2 from 0: 0.3, 0.45, 0.525, 0.5625; 0.75, 1.125, (1.3125 -> reset) 0, 0.75
    assert np.allclose(output_membrane(currents, spikes, 2.0), [[0.5625, 0.75]])


def test_every_backend_works_out_the_models_own_membrane(active_small_model):
    """The readout of the exported graph, fed a backend's recorded spikes,
    gives the membrane the float64 model computes from its own currents."""
    model = active_small_model
    x = torch.from_numpy(load_splits("synthetic", {"PublicTest": 12})["PublicTest"].images[:, None] / 255.0)
    with torch.no_grad():
        out, currents = model(x, with_currents=True)
    expected = output_membrane(currents, out, model.config.tau).numpy()
    from fer2neuro.exporters.nir_export import model_to_nir
    from fer2neuro.nirgraph.file import GraphInfo

    graph = model_to_nir(model)
    dt = GraphInfo.of(graph).dt
    readout = Readout.of_graph(graph)
    recording = get_target("nir").open(graph).run(x.numpy()[:, None].repeat(model.config.timesteps, 1), dt=dt)
    assert np.allclose(readout.membrane(recording.outputs, dt), expected, atol=1e-9)
    again = Readout.from_json(readout.to_json())
    assert np.array_equal(again.weight, readout.weight) and again.source == readout.source


def test_evaluation_breaks_ties_by_the_membrane(make_active_model):
    model = make_active_model("small").float()
    data = load_splits("synthetic", {"PublicTest": 40})["PublicTest"]
    x, y = data.tensors()
    with torch.no_grad():
        out, currents = model(x, with_currents=True)
    counts = out.sum(0)
    tied = (counts == counts.max(-1, keepdim=True).values).sum(-1) > 1
    assert tied.any()                                           # the rule has work to do here
    expected = decide(counts, output_membrane(currents.double(), out, model.config.tau))
    assert not torch.equal(expected, counts.argmax(-1))
    result = evaluate_model(model, data, batch_size=16)
    assert np.array_equal(result.samples[1], expected.numpy())
    assert result.silent == int((counts.sum(-1) == 0).sum())


def test_bad_readout_metadata_is_a_data_error():
    from fer2neuro.errors import DataError

    good = json.loads(Readout("o", "s", np.ones((2, 3)), np.zeros(2), *(np.ones(1),) * 3, np.zeros(1)).to_json())
    for change in ({"weight": [[1.0, float("nan"), 0], [0, 0, 0]]}, {"bias": [1, 2, 3]}, {"tau": [0.0]},
                   {"weight": "x"}):
        with pytest.raises(DataError):
            Readout.from_json(json.dumps({**good, **change}))
    with pytest.raises(DataError):
        Readout.from_json("{")


# ---- faces in photographs ------------------------------------------------------------

@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A drawn (synthetic) face, enlarged, in a larger noisy scene, and the
    face's own 48 x 48 pixels."""
    faces = load_splits("synthetic", {"PublicTest": 100})["PublicTest"]
    folder = tmp_path_factory.mktemp("photos")
    for image in faces.images:
        picture, box = scene_with_face(image)
        if find_faces(picture):
            return write_png(folder / "scene.png", picture), box, image
    pytest.fail("no synthetic face detected")


def test_the_detector_finds_the_pasted_face(scene):
    path, truth, _ = scene
    import cv2

    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    found = find_faces(grey)
    assert len(found) == 1
    box = framed(found[0], 0.16, grey.shape)
    overlap = max(0, min(box.x + box.size, truth.x + truth.size) - max(box.x, truth.x)) * \
        max(0, min(box.y + box.size, truth.y + truth.size) - max(box.y, truth.y))
    assert overlap / truth.size ** 2 > 0.8


def test_framing_stays_square_and_inside_the_image():
    assert framed(Box(90, 5, 20), 0.5, (100, 100)) == Box(60, 0, 40)      # grown by 10 a side, moved in
    assert framed(Box(0, 0, 80), 0.5, (60, 100)).size == 60
    assert whole((30, 50)) == Box(10, 0, 30)


@pytest.fixture(scope="module")
def exports(active_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    for target, name in (("onnx", "model.onnx"), ("nir", "model.nir"), ("lava", "lava")):
        assert invoke("export", active_checkpoint, "--target", target, "--out", folder / name).exit_code == 0
    return folder


def predicted(*args):
    result = invoke("predict", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_float_target_gives_the_same_class_and_spikes(scene, active_checkpoint, exports):
    path = scene[0]
    runs = {"nir (checkpoint)": predicted(path, "--model", active_checkpoint, "--margin", "0.16"),
            "nir (.nir)": predicted(path, "--model", exports / "model.nir", "--margin", "0.16"),
            "onnx (checkpoint)": predicted(path, "--model", active_checkpoint, "--target", "onnx", "--margin", "0.16"),
            "onnx (.onnx)": predicted(path, "--model", exports / "model.onnx", "--target", "onnx", "--margin", "0.16"),
            "lava": predicted(path, "--model", exports / "lava", "--target", "lava", "--margin", "0.16")}
    faces = {name: run["images"][0]["faces"] for name, run in runs.items()}
    first = faces["nir (checkpoint)"]
    assert len(first) == 1 and set(first[0]["spike_counts"]) == set(load_checkpoint(active_checkpoint).class_names)
    for name, found in faces.items():
        assert found == first, name
        assert runs[name]["rule"].startswith("most spikes, then the highest output membrane"), name


def test_fixed_point_targets_decide_as_verify_does(scene, active_checkpoint, exports):
    """predict's class on loihi and lava-fixed is what verify's decision
    gives for the same crop run on that target."""
    import cv2

    path = scene[0]
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    crop = face_input(grey, framed(find_faces(grey)[0], 0.16, grey.shape), 48)
    graph = graph_from_path(str(active_checkpoint))
    x = np.repeat(crop[None, None], 4, axis=1)
    for target in ("loihi", "lava-fixed"):
        recording = get_target(target).open(graph).run(x, dt=1.0 if graph.metadata.get("dt") is None else None)
        expected = deciding(graph)(recording.outputs)[0]
        face = predicted(path, "--model", active_checkpoint, "--target", target, "--margin", "0.16")["images"][0]["faces"][0]
        names = list(face["spike_counts"])
        assert face["class"] == names[int(expected)], target
        assert list(face["spike_counts"].values()) == recording.output[0].sum(0).reshape(-1).astype(int).tolist()


def test_a_whole_face_image_gets_the_models_own_class(active_checkpoint, active_small_model, tmp_path):
    """--no-detect on a 48 x 48 face: the input is the face itself, so the
    class is the one evaluate's rule gives the float64 model."""
    faces = load_splits("synthetic", {"PublicTest": 6})["PublicTest"]
    paths = [write_png(tmp_path / f"face{i}.png", image) for i, image in enumerate(faces.images)]
    result = predicted(*paths, "--model", active_checkpoint, "--no-detect")
    model = load_checkpoint(active_checkpoint).build(dtype=torch.float64).double()
    x = torch.from_numpy(faces.images[:, None] / 255.0)
    with torch.no_grad():
        out, currents = model(x, with_currents=True)
    expected = decide(out.sum(0), output_membrane(currents, out, model.config.tau))
    names = list(model.config.class_names)
    assert [e["faces"][0]["class"] for e in result["images"]] == [names[int(k)] for k in expected]
    assert all(e["faces"][0]["box"] == [0, 0, 48, 48] for e in result["images"])


def test_colour_and_any_size_and_annotation(scene, active_checkpoint, tmp_path):
    import cv2

    grey = cv2.imread(str(scene[0]), cv2.IMREAD_GRAYSCALE)
    colour = cv2.resize(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), (960, 720))
    colour[..., 2] = np.clip(colour[..., 2].astype(int) + 30, 0, 255)        # a tint: really colour
    big = tmp_path / "big colour.jpg"
    assert cv2.imwrite(str(big), colour)
    out = tmp_path / "annotated"
    result = invoke("predict", big, "--model", active_checkpoint, "--annotate", out)
    assert result.exit_code == 0, result.output
    assert "face at x=" in result.output and "spikes over T=4" in result.output
    drawn = cv2.imread(str(out / "big colour.png"))
    assert drawn.shape == colour.shape and not np.array_equal(drawn, colour)


def test_bad_inputs_are_one_line_each_and_the_rest_go_on(scene, active_checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    noise = np.random.default_rng(0).integers(0, 255, (200, 300)).astype(np.uint8)
    write_png(tmp_path / "noise.png", noise)
    (tmp_path / "empty").mkdir()
    result = invoke("predict", scene[0], tmp_path, tmp_path / "empty", tmp_path / "missing.png",
                    "--model", active_checkpoint)
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert any("notes.txt" in line and "not images" in line for line in err)
    assert any("broken.jpg" in line and "not an image" in line for line in err)
    assert any("noise.png" in line and "no face found" in line for line in err)
    assert any("empty" in line and "no image files" in line for line in err)
    assert any("missing.png" in line and "no such file" in line for line in err)
    assert "Traceback" not in result.output and result.stdout.count("face at") == 1
    none = invoke("predict", tmp_path / "noise.png", tmp_path / "broken.jpg", "--model", active_checkpoint)
    assert none.exit_code != 0 and "no face in any image" in none.stderr and "Traceback" not in none.output


# ---- no silent collapse -------------------------------------------------------------------

def test_a_short_run_on_400_images_ends_above_chance_and_says_why(tmp_path):
    """Issue 26: this command used to end with every PublicTest face in one
    class (14.3 %): the feature initialisation left BatchNorm's running
    statistics at (0, 1), so the initialised network was silent in eval
    mode, and 23 steps at the fast recipe's rate undid its readout."""
    out = tmp_path / "run"
    result = invoke("train", "--data", "synthetic", "--preset", "small", "--epochs", "1", "--limit", "400",
                    "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.2                          # chance: 1/7
    assert max(max(row) for row in metrics["test"]["confusion"]) < 0.9 * metrics["test"]["n"]  # not one class
    assert "val_accuracy" in metrics["init"]
    if metrics["best_epoch"] == 0:
        assert "no epoch beat the initialised network" in result.stderr


def test_evaluate_warns_when_most_faces_get_no_output_spike(tmp_path):
    from fer2neuro.model.checkpoint import save_checkpoint
    from fer2neuro.model.config import preset_config
    from fer2neuro.model.network import build_model

    config = preset_config("small", class_names=tuple(load_splits("synthetic", {"PublicTest": 1})["PublicTest"].class_names))
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.fc3.weight.zero_()                    # a silent output layer
    save_checkpoint(tmp_path / "silent.pt", model, config)
    result = invoke("evaluate", tmp_path / "silent.pt", "--data", "synthetic", "--limit", "20")
    assert result.exit_code == 0
    assert "got no output spike" in result.stderr and "20 of 20" in result.stderr
