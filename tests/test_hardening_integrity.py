"""Issue 17, parameter integrity: damaged checkpoints, non-finite weights in
checkpoints and NIR graphs, and training that diverges."""
import math

import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fer2neuro.training.loop as loop
from fer2neuro.model.architecture import two_conv_template
from fer2neuro.cli import main
from fer2neuro.errors import CheckpointError, ConfigError, GraphError, TargetError, TrainingError
from fer2neuro.model.checkpoint import DIGEST_KEY, load_checkpoint, save_checkpoint
from fer2neuro.model.config import ModelConfig
from fer2neuro.model.network import build_model
from fer2neuro.nirgraph.file import read_graph, write_graph
from fer2neuro.training.run import TrainOptions, train
from fer2neuro.training.stdp import STDPOptions, stdp_phase
from fer2neuro.targets import get_target
from cli_errors import one_line_error

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
TINY = ["--data", "synthetic", "--preset", "small", "--limit", "32", "--val-limit", "16",
        "--timesteps", "2", "--no-progress", "--batch-size", "16"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def config():
    return ModelConfig(preset="test", blocks=two_conv_template(4, (16, 8)), class_names=CLASSES)


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    cfg = config()
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model(cfg), cfg)
    return path


def flipped(path, out, start, count):
    data = bytearray(path.read_bytes())
    for k in range(start, start + count):
        data[k] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


# -- checkpoints --------------------------------------------------------------------------------------

def test_bytes_flipped_in_the_middle_are_refused_not_loaded_wrong(ckpt, tmp_path):
    size = ckpt.stat().st_size
    bad = flipped(ckpt, tmp_path / "mid.pt", size // 2, 2000)        # inside fc1's weights: torch loads it
    with pytest.raises(CheckpointError, match=r"mid\.pt: the checkpoint file is corrupt"):
        load_checkpoint(bad)
    one_line_error(invoke("export", bad, "--target", "nir", "--out", tmp_path / "g.nir"), "mid.pt", "corrupt")
    assert not (tmp_path / "g.nir").exists()


def test_bytes_torch_itself_refuses_give_one_line(ckpt, tmp_path):
    bad = flipped(ckpt, tmp_path / "pkl.pt", 200, 1000)               # the pickled header
    with pytest.raises(CheckpointError, match=r"pkl\.pt: "):
        load_checkpoint(bad)
    bad = flipped(ckpt, tmp_path / "end.pt", ckpt.stat().st_size - 1500, 500)   # the zip directory
    one_line_error(invoke("export", bad, "--target", "nir", "--out", tmp_path / "g.nir"), "end.pt",
                   "not a readable fer2neuro checkpoint")


def test_the_hash_catches_weights_changed_behind_a_valid_zip(ckpt, tmp_path):
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"]["fc1.weight"][0, 0] += 1.0                 # rewritten: fresh CRCs, stale hash
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt: the checkpoint file is corrupt .*SHA-256"):
        load_checkpoint(tmp_path / "edited.pt")


def test_a_checkpoint_from_before_the_hash_still_loads(ckpt, tmp_path):
    payload = torch.load(ckpt, weights_only=True)
    assert len(payload.pop(DIGEST_KEY)) == 64
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").state_dict.keys() == payload["state_dict"].keys()


def test_a_text_file_is_named_as_such(tmp_path):
    (tmp_path / "notes.pt").write_text("epoch,loss\n1,0.5\n")
    line = one_line_error(invoke("export", tmp_path / "notes.pt", "--target", "nir", "--out", tmp_path / "g.nir"),
                          "notes.pt", "text file")
    assert "(101)" not in line


@pytest.fixture
def nan_ckpt(tmp_path):
    torch.manual_seed(0)
    cfg = config()
    model = build_model(cfg)
    with torch.no_grad():
        model.fc1.weight[1, 2] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", model, cfg)                   # a valid hash over NaN weights
    return tmp_path / "nan.pt"


def test_nan_weights_in_a_checkpoint_are_refused_by_every_command(nan_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match=r"nan\.pt: tensor 'fc1\.weight' holds non-finite values \(1 NaN"):
        load_checkpoint(nan_ckpt)
    for target in ("nir", "lava", "onnx"):
        one_line_error(invoke("export", nan_ckpt, "--target", target, "--out", tmp_path / f"x.{target}"),
                       "fc1.weight")
    one_line_error(invoke("evaluate", nan_ckpt, "--limit", "8"), "fc1.weight")
    one_line_error(invoke("verify", nan_ckpt), "fc1.weight")


# -- NIR graphs ---------------------------------------------------------------------------------------

def graph(weight=1.0, tau=2.0):
    ones = np.ones(3)
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Affine(weight=np.array([[1.0, 0.5, 0], [0, 1, -1], [0.25, 0.25, weight]]),
                              bias=np.array([0.1, 0, 0.2])),
             "lif": nir.LIF(tau=tau * ones, r=ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones),
             "output": nir.Output(output_type={"output": np.array([3])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_a_nan_graph_is_refused_on_reading_and_by_targets(tmp_path):
    path = tmp_path / "nan.nir"
    write_graph(graph(weight=float("nan")), path)
    with pytest.raises(GraphError, match=r"nan\.nir: node 'fc' \(Affine\): parameter weight is not finite"):
        read_graph(path)
    for target in ("nir", "lava"):
        with pytest.raises(TargetError, match=r"node 'fc' \(Affine\): parameter weight is not finite"):
            get_target(target).run(graph(weight=float("nan")), np.ones((1, 2, 3)))
        np.save(tmp_path / "x.npy", np.ones((1, 2, 3)))
        one_line_error(invoke("simulate", path, "--target", target, "--input", tmp_path / "x.npy",
                              "--out", tmp_path / "y.npz"), "'fc'", "weight")
        assert not (tmp_path / "y.npz").exists()
    one_line_error(invoke("report", path, "--target", "loihi"), "'fc'", "weight")
    write_graph(graph(), tmp_path / "ok.nir")                         # the same graph, finite, is fine
    get_target("nir").run(read_graph(tmp_path / "ok.nir"), np.ones((1, 2, 3)))


def test_an_infinite_tau_keeps_the_snntorch_hint(tmp_path):
    write_graph(graph(tau=math.inf), tmp_path / "if.nir")
    with pytest.raises(GraphError, match=r"parameter tau is not finite \(snnTorch's export_to_nir"):
        read_graph(tmp_path / "if.nir")


# -- training -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("lr", math.nan), ("lr", math.inf), ("stdp_a_plus", math.nan),
                                         ("stdp_tau_minus", math.inf), ("stdp_bound", math.inf)])
def test_non_finite_options_are_refused(field, value, tmp_path):
    with pytest.raises(ConfigError, match="finite"):
        TrainOptions(out=str(tmp_path), **{field: value})


def refused(result, *fragments):
    """Non-zero exit with an ``Error:`` line naming ``fragments`` (click's
    usage errors add a usage line), no traceback."""
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), result.output


def test_train_lr_nan_and_stdp_nan_are_clear_errors(tmp_path):
    refused(invoke("train", *TINY, "--out", tmp_path / "a", "--lr", "nan"), "--lr", "finite")
    refused(invoke("train", *TINY, "--out", tmp_path / "b", "--stdp-every", "1", "--stdp-a-plus", "nan"),
            "--stdp-a-plus", "finite")
    assert not (tmp_path / "a" / "last.pt").exists() and not (tmp_path / "b" / "last.pt").exists()


def nan_at_call(monkeypatch, n):
    """forward_loss whose ``n``-th call (1-based) returns a NaN loss."""
    real, calls = loop.forward_loss, [0]

    def forward_loss(*args, **kwargs):
        out, value = real(*args, **kwargs)
        calls[0] += 1
        return out, value * math.nan if calls[0] == n else value

    monkeypatch.setattr(loop, "forward_loss", forward_loss)


def test_the_first_nan_loss_stops_the_epoch_before_its_step(monkeypatch):
    from fer2neuro.data import load_split

    torch.manual_seed(0)
    model = build_model(config())
    data = load_split("synthetic", "Training", limit=64)
    batches = loop.Batches(data, 8, torch.device("cpu"), shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = [0]
    real_step = optimizer.step
    optimizer.step = lambda *a, **k: (steps.__setitem__(0, steps[0] + 1), real_step(*a, **k))
    nan_at_call(monkeypatch, 3)
    with pytest.raises(TrainingError, match=r"non-finite \(nan\) at epoch 1/1, batch 3"):
        loop.train_epoch(model, batches, optimizer, smoothing=0.0, progress=False, desc="epoch 1/1")
    assert steps[0] == 2                                                    # batch 3 never stepped
    assert loop.nonfinite_tensor(model) is None


def test_non_finite_weights_after_an_epoch_or_stdp_stop_training():
    torch.manual_seed(0)
    model = build_model(config())
    with torch.no_grad():
        model.bn1.running_var[0] = math.inf
    with pytest.raises(TrainingError, match=r"'bn1\.running_var' holds NaN or infinite values"):
        loop.check_finite_model(model)
    model = build_model(config())
    opts = STDPOptions(every=1, a_plus=0.05, a_minus=0.01, neuron_threshold=0.5, neuron_tau=2.0, batches=1, steps=4)
    object.__setattr__(opts, "a_plus", math.nan)                            # past the option checks
    batches = [(torch.rand(2, 1, 48, 48), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(TrainingError, match=r"STDP phase left non-finite values in fc1\.weight"):
        stdp_phase(model, batches, opts)


def test_a_diverging_resume_keeps_the_last_good_checkpoint(monkeypatch, tmp_path):
    out = tmp_path / "run"
    base = dict(out=str(out), preset="small", limit=32, val_limit=16, timesteps=2, progress=False, batch_size=16)
    train(TrainOptions(epochs=1, **base))
    good = (out / "last.pt").read_bytes()
    nan_at_call(monkeypatch, 1)
    with pytest.raises(TrainingError, match="epoch 2/2, batch 1"):
        train(TrainOptions(epochs=2, resume=True, **base))
    assert (out / "last.pt").read_bytes() == good
    assert load_checkpoint(out / "last.pt").epoch == 1


def test_a_truncated_network_net_is_one_line_on_the_fixed_point_targets(ckpt, tmp_path):
    folder = tmp_path / "lava"
    assert invoke("export", ckpt, "--target", "lava", "--out", folder).exit_code == 0
    net = folder / "network.net"
    data = net.read_bytes()
    net.write_bytes(data[:len(data) // 2])
    frames = np.repeat(np.random.default_rng(0).uniform(size=(2, 1, 1, 48, 48)), 2, axis=1)
    np.save(tmp_path / "x.npy", frames)
    for target in ("lava-fixed", "loihi"):
        result = invoke("simulate", folder, "--target", target, "--input", tmp_path / "x.npy",
                        "--out", tmp_path / "y.npz")
        one_line_error(result, "network.net", "not a readable netx HDF5 network")
    assert not (tmp_path / "y.npz").exists()


def test_every_target_refuses_a_nan_graph_given_in_python():
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Linear(weight=np.array([[1.0, np.nan, 0.0], [0.0, 1.0, 0.0]])),
             "if1": nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "if1"), ("if1", "output")], type_check=False)
    for name in ("nir", "onnx", "lava", "lava-fixed", "loihi"):
        with pytest.raises(TargetError, match="node 'fc' \\(Linear\\): parameter weight is not finite"):
            get_target(name).open(graph)


def test_the_training_state_has_its_own_hash(tmp_path):
    """last.pt's optimizer state (what --resume continues from) is covered
    too: an Adam moment changed behind a valid zip is refused."""
    torch.manual_seed(0)
    cfg = config()
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 48, 48)).sum().backward()
    optimizer.step()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, cfg, epoch=1, train_state={"optimizer": optimizer.state_dict(),
                                                            "torch_rng": torch.get_rng_state()})
    assert load_checkpoint(path).epoch == 1
    payload = torch.load(path, weights_only=True)
    payload["train_state"]["optimizer"]["state"][0]["exp_avg"].add_(1.0)
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt: the checkpoint file is corrupt \(its training state"):
        load_checkpoint(tmp_path / "edited.pt")
