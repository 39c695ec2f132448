"""The layer table: SPEC §1's sequence and shapes, and every consumer (the
model, the NIR export, the summary, the SynOps count) following it when the
config changes."""
import nir
import numpy as np
import pytest
import torch

from fer2neuro.model.architecture import two_conv_template
from fer2neuro.efficiency import synaptic_inputs, synaptic_operations
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.model.config import ModelConfig, preset_config
from fer2neuro.model.layers import INPUT, network_layers
from fer2neuro.model.network import build_model
from fer2neuro.model.summary import summarize
from fer2neuro.model.layers import NEURON_KINDS, SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)
NEURON_LAYERS = layer_names(TemplateConfig(), *NEURON_KINDS)

# the model's attributes, so its state_dict keys: checkpoints written before the table must still load
MODULES = ("conv1", "bn1", "if1", "pool1", "conv2", "bn2", "if2", "pool2", "drop1", "fc1", "lif1",
           "drop2", "fc2", "lif2", "fc3", "lif_out")


# a preset the code has never seen: every size differs from the paper's
ODD = ModelConfig(preset="odd", image_size=32, blocks=two_conv_template(8, (64, 32)), num_classes=5, timesteps=3)


def test_paper_table_is_spec_section_1():
    layers = network_layers(preset_config("paper"))
    assert [(layer.name, layer.kind, layer.shape) for layer in layers] == [
        ("conv1", "conv", (128, 48, 48)), ("if1", "if", (128, 48, 48)), ("pool1", "maxpool", (128, 24, 24)),
        ("conv2", "conv", (128, 24, 24)), ("if2", "if", (128, 24, 24)), ("pool2", "maxpool", (128, 12, 12)),
        ("flatten", "flatten", (18432,)), ("drop1", "dropout", (18432,)), ("fc1", "linear", (1152,)),
        ("lif1", "lif", (1152,)), ("drop2", "dropout", (1152,)), ("fc2", "linear", (128,)),
        ("lif2", "lif", (128,)), ("fc3", "linear", (7,)), ("lif_out", "lif", (7,)),
    ]
    assert layers[0].input_shape == (1, 48, 48)
    assert all(a.shape == b.input_shape for a, b in zip(layers, layers[1:]))


def test_derived_names_and_sources():
    assert SPIKING_LAYERS == ("if1", "pool1", "if2", "pool2", "lif1", "lif2", "lif_out")
    assert NEURON_LAYERS == ("if1", "if2", "lif1", "lif2", "lif_out")
    assert synaptic_inputs(TemplateConfig()) == {"conv1": INPUT, "conv2": "pool1", "fc1": "pool2", "fc2": "lif1", "fc3": "lif2"}


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_module_names_are_unchanged(preset):
    model = build_model(preset_config(preset))
    assert tuple(name for name, _ in model.named_children()) == MODULES
    stateless = {"pool1", "pool2", "drop1", "drop2"}
    assert {key.split(".")[0] for key in model.state_dict()} == set(MODULES) - stateless


def test_a_new_config_needs_no_code_change():
    torch.manual_seed(0)
    model = build_model(ODD).eval()
    images = torch.rand(2, 1, 32, 32)
    assert model(images).shape == (3, 2, 5)
    assert summarize(ODD).total_params == sum(p.numel() for p in model.parameters() if p.requires_grad)

    graph = model_to_nir(model)                            # type-checks every edge, or raises
    trace = model.record(images)
    for name in SPIKING_LAYERS:
        assert tuple(np.asarray(graph.nodes[name].output_type["output"])) == trace[name].shape[2:], name
    assert tuple(graph.nodes["input"].output_type["output"]) == (1, 32, 32)
    assert isinstance(graph.nodes["output"], nir.Output)
    assert tuple(graph.nodes["output"].input_type["input"]) == (5,)

    assert set(synaptic_operations(model, images)) == {"conv2", "fc1", "fc2", "fc3"}


def test_a_new_config_runs_the_fused_pool_like_the_recorded_walk():
    """Without a trace the fused engine pools inside the IF kernel; with one
    the walk pools apart. Same output spikes, and gradients reach conv1."""
    torch.manual_seed(0)
    model = build_model(ODD).eval()
    with torch.no_grad():  # make the head spike, so equal outputs mean something
        for fc in (model.fc1, model.fc2, model.fc3):
            fc.weight.mul_(3.0)
    images = torch.rand(4, 1, 32, 32)
    spikes, currents = model(images, with_currents=True)
    reference = model.record(images)["lif_out"]
    assert reference.sum() > 0 and torch.equal(spikes, reference)
    assert currents.shape == (3, 4, 5)
    model.train()(images).mean().backward()
    assert model.conv1.weight.grad.abs().sum() > 0
