"""Architectures as data (issue 25): the presets as block lists, old
checkpoints, ``--arch`` files and their one-line errors, and a custom
architecture that trains, exports and verifies on every backend."""
import json

import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import ConfigError
from fer2neuro.model.architecture import ConvBlock, DenseBlock, describe, two_conv_template
from fer2neuro.model.checkpoint import CONFIG_DIGEST_KEY, load_checkpoint, load_model, save_checkpoint
from fer2neuro.model.config import PRESETS, ModelConfig, arch_config, load_arch, preset_config
from fer2neuro.model.network import build_model
from fer2neuro.model.summary import summarize

# The state_dict of the two-conv template before architectures were data
# (parameters and buffers), which every checkpoint written then holds.
TEMPLATE_KEYS = [
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
    "conv2.weight", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked",
    "fc1.weight", "fc2.weight", "fc3.weight"]
TEMPLATE_WIDTHS = {"paper": (128, 1152, 128), "medium": (32, 512, 128), "small": (16, 256, 128)}

CUSTOM = """
# three conv blocks, one without pooling, a 5x5 kernel, a 3x3 pool, an IF dense layer
blocks:
  - {conv: 4, kernel: 5, pool: 2}
  - {conv: 6}
  - {conv: 6, pool: 3}
  - {dense: 24, neuron: if}
  - {dense: 12}
"""


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("preset", sorted(TEMPLATE_WIDTHS))
def test_presets_build_the_models_of_before(preset):
    c, h1, h2 = TEMPLATE_WIDTHS[preset]
    state = build_model(preset_config(preset)).state_dict()
    assert [k for k in state if not k.endswith(("lif1.mem", "lif2.mem")) and "." in k and
            not k.split(".")[0].startswith(("if", "lif", "pool"))] == TEMPLATE_KEYS
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["conv1.weight"] == (c, 1, 3, 3) and shapes["conv2.weight"] == (c, c, 3, 3)
    assert shapes["fc1.weight"] == (h1, c * 12 * 12) and shapes["fc2.weight"] == (h2, h1)
    assert shapes["fc3.weight"] == (7, h2)
    assert PRESETS[preset].blocks == two_conv_template(c, (h1, h2))


def test_paper_preset_is_unchanged():
    summary = summarize(preset_config("paper"))
    assert summary.total_params == 21_531_136 and summary.mult_adds == 427_920_896


def test_deep_preset_is_five_conv_layers_in_vgg_style():
    config = preset_config("deep")
    assert describe(config.blocks) == "c32p2 c48 c48p2 c96 c96p2 d256"
    summary = summarize(config)
    assert summary.total_params == 1_046_432 and summary.mult_adds == 155_499_520
    kinds = [layer.kind for layer in build_model(config).layers]
    assert kinds.count("conv") == 5 and kinds.count("maxpool") == 3 and kinds[-2:] == ["linear", "lif"]


def test_a_checkpoint_from_before_blocks_loads_and_verifies(tmp_path, make_active_model):
    """The config of an old checkpoint has ``channels`` and ``hidden`` and no
    ``blocks``: it loads into the same network, which verifies."""
    model = make_active_model("small", blocks=two_conv_template(4, (32, 16))).float()
    save_checkpoint(tmp_path / "new.pt", model, model.config)
    raw = torch.load(tmp_path / "new.pt", weights_only=True)
    old = dict(raw["config"])
    del old["blocks"]
    old.update(channels=4, hidden=[32, 16])
    raw["config"] = old
    del raw[CONFIG_DIGEST_KEY]            # as old as that: from before the config had its SHA-256
    torch.save(raw, tmp_path / "old.pt")
    loaded, ckpt = load_model(tmp_path / "old.pt")
    assert ckpt.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    result = invoke("verify", tmp_path / "old.pt", "--backends", "nir", "--samples", 4, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["equivalent"] and report["backends"]["nir"]["counts_equal"]
    assert report["backends"]["nir"]["layers"]["lif_out"]["reference_spikes"] > 0


def test_blocks_round_trip_through_the_checkpoint(tmp_path):
    config = ModelConfig(preset="x", blocks=(ConvBlock(3, kernel=5, pool=2), ConvBlock(5), DenseBlock(9, "if")),
                         class_names=tuple("abcdefg"))
    save_checkpoint(tmp_path / "m.pt", build_model(config), config)
    assert load_checkpoint(tmp_path / "m.pt").config == config
    assert describe(config.blocks) == "c3k5p2 c5 d9if"


@pytest.mark.parametrize("text, suffix, message", [
    ("blocks: [{conv: 8, kernel: 4}]", ".yaml", r"blocks\[0\]: kernel must be odd"),
    ("blocks: [{conv: 8, pol: 2}]", ".yaml", r"blocks\[0\]: unknown field 'pol' in a conv block"),
    ("blocks: [{conv: 8}, {dense: 16}, {conv: 4}]", ".yaml", r"blocks\[2\]: a conv block after a dense block"),
    ("blocks: [{dense: 16}]", ".yaml", "starts with a conv block"),
    ("blocks: [{conv: 8, pool: 5}]", ".yaml", r"blocks\[0\]: pool 5 does not divide the 48x48"),
    ("blocks: [{conv: 0}]", ".yaml", r"blocks\[0\]: conv must be an integer from 1"),
    ("blocks: [{conv: 8, dense: 3}]", ".yaml", "exactly one of 'conv' or 'dense'"),
    ("blocks: [{conv: 8}]\ndropout: 1.5", ".yaml", "dropout must be a number from 0 to 1"),
    ("blocks: [{conv: 8}]\nwidth: 3", ".yaml", "unknown field 'width'"),
    ("layers: []", ".yaml", "a mapping with a 'blocks' list"),
    ("blocks: [{conv: 8]", ".yaml", "not valid YAML"),
    ('{"blocks": [{"conv": 8}], "tau": NaN}', ".json", "non-finite number NaN"),
    ('{"blocks": [{"conv": 8},]}', ".json", "not valid JSON"),
    ("blocks: [{dense: 16, neuron: relu}]", ".yaml", "neuron must be one of lif, if"),
])
def test_a_bad_architecture_file_is_one_line_naming_the_field(tmp_path, text, suffix, message):
    path = tmp_path / f"arch{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_arch(path)
    result = invoke("train", "--data", "synthetic", "--arch", path, "--epochs", 1, "--out", tmp_path / "run")
    assert result.exit_code != 0 and not (tmp_path / "run" / "best.pt").exists()
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr and "Traceback" not in result.output


def test_arch_and_an_explicit_preset_are_refused(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(CUSTOM)
    result = invoke("train", "--data", "synthetic", "--arch", path, "--preset", "small", "--out", tmp_path / "r")
    assert result.exit_code != 0 and "give one" in result.stderr


def test_arch_file_options_and_command_line_overrides(tmp_path):
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"blocks": [{"conv": 8, "pool": 2}, {"dense": 32}], "dropout": 0.2, "tau": 3}))
    arch = load_arch(path)
    config = arch_config(arch, timesteps=2)
    assert config.preset == "net" and config.dropout == 0.2 and config.tau == 3.0 and config.timesteps == 2
    assert arch_config(arch, dropout=0.0).dropout == 0.0
    names = [layer.name for layer in build_model(config).layers]
    assert names == ["conv1", "if1", "pool1", "flatten", "drop1", "fc1", "lif1", "fc2", "lif_out"]


def test_a_custom_architecture_trains_exports_and_verifies(tmp_path):
    """Everything downstream walks the block list: training, summary, export
    to every format, verification (float backends spike-exact, fixed-point
    ones bit-exact with each other) and QAT fine-tuning, with no per-architecture code."""
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    run = tmp_path / "run"
    result = invoke("train", "--data", "synthetic", "--arch", path, "--epochs", 1, "--limit", 64,
                    "--val-limit", 16, "--recipe", "paper", "--no-progress", "--out", run)
    assert result.exit_code == 0, result.output
    config = load_checkpoint(run / "best.pt").config
    assert config.preset == "custom" and describe(config.blocks) == "c4k5p2 c6 c6p3 d24if d12"
    summary = json.loads(invoke("summary", "--arch", path, "--json").output)
    assert [row["name"] for row in summary["layers"]] == [
        "encoder", "conv1", "if1", "pool1", "conv2", "if2", "conv3", "if3", "pool3", "fc1", "if_fc1",
        "fc2", "lif2", "fc3", "lif_out"]
    assert summary["total_params"] == sum(p.numel() for p in build_model(config).parameters())

    verified = invoke("verify", run / "best.pt", "--backends", "all", "--samples", 6, "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.output)
    assert report["equivalent"]
    for name in ("nir", "lava", "onnx"):
        backend = report["backends"][name]
        assert backend["exact_required"] and backend["equivalent"] and backend["first_divergence"] is None, name
        assert set(backend["layers"]) == {"if1", "pool1", "if2", "if3", "pool3", "if_fc1", "lif2", "lif_out"}
    assert report["fixed_point_agreement"] and all(p["bit_exact"] for p in report["fixed_point_agreement"].values())

    # a 3x3 pool is not a power-of-2 window: --for snntorch writes it as a one-hot Conv2d with its input shape
    exported = invoke("export", run / "best.pt", "--target", "nir", "--for", "snntorch", "--out", tmp_path / "s.nir")
    assert exported.exit_code == 0, exported.output
    import nir
    node = nir.read(tmp_path / "s.nir").nodes["pool3_sum"]
    assert isinstance(node, nir.Conv2d) and tuple(node.input_shape) == (24, 24) and node.weight.shape == (6, 6, 3, 3)

    tuned = invoke("finetune", run / "best.pt", "--qat", "loihi", "--epochs", 1, "--limit", 16, "--batch-size", 8,
                   "--eval-limit", 8, "--data", "synthetic", "--out", tmp_path / "qat")
    assert tuned.exit_code == 0, tuned.output
    qat = invoke("verify", tmp_path / "qat" / "best.pt", "--backends", "loihi,lava-fixed", "--samples", 4, "--json")
    assert qat.exit_code == 0, qat.output
    assert all(entry["bit_exact"] for entry in json.loads(qat.output)["qat_model_agreement"].values())
