"""The training path on a CUDA GPU: the same spikes and gradients as on the
CPU, a training run with ``device="cuda"``, bf16 autocast, the batch loader.

Run with ``pytest -m cuda tests/test_cuda.py`` on a machine whose torch is a
CUDA build; everywhere else every test here is skipped.

TF32 is switched off for these tests (cuDNN allows it by default for
convolutions): with it a float32 convolution keeps 10 mantissa bits and the
comparisons below would measure TF32, not the code.
"""
import json
import math

import pytest
import torch

from fer2neuro.model.network import ENGINES, build_model
from fer2neuro.training import loop
from fer2neuro.training.device import autocast
from fer2neuro.training.loop import Batches
from fer2neuro.training.losses import output_loss
from fer2neuro.training.run import TrainOptions, train
from fer2neuro.model.layers import SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is false)"),
]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rebuild(model, engine, device, dtype):
    """``model``'s weights in a fresh network (deepcopy would copy autograd state)."""
    copy = build_model(model.config, engine=engine)
    copy.load_state_dict(model.state_dict())
    return copy.to(device=device, dtype=dtype).eval()


@pytest.mark.parametrize("engine", ENGINES)
def test_same_spikes_as_the_cpu_in_float64(engine, make_active_model, make_probe_images):
    model, x = make_active_model("small"), make_probe_images(8)
    cpu = model.record(x)
    gpu = rebuild(model, engine, CUDA, torch.float64).record(x.to(CUDA))
    for layer in SPIKING_LAYERS:
        assert cpu[layer].any(), layer                 # the comparison says something
        assert torch.equal(gpu[layer].cpu(), cpu[layer]), layer


def gradients(model, x, y):
    model.zero_grad(set_to_none=True)
    output_loss(model(x), y, 0.1).backward()
    return {name: p.grad.detach().cpu().double() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_same_gradients_as_the_cpu(dtype, tolerance, make_active_model, make_probe_images):
    """float32 tolerance: on the CPU float32 gradients are already up to 1.5e-6
    (relative, in norm) from float64 ones (conv1; 2e-7 for fc3), and the GPU
    sums in another order, so 1e-5 is float32 rounding and nothing more. (A
    spike flipped by rounding would break any tolerance; on these 8 faces
    float32 and float64 spike alike on the CPU.)"""
    model, x = make_active_model("small"), make_probe_images(8)
    y = torch.arange(8) % model.config.num_classes
    cpu = gradients(rebuild(model, "fused", "cpu", dtype), x.to(dtype), y)
    gpu = gradients(rebuild(model, "fused", CUDA, dtype), x.to(CUDA, dtype), y.to(CUDA))
    for name, g in cpu.items():
        assert g.norm() > 0, name
        assert (gpu[name] - g).norm() <= tolerance * g.norm(), name


def small_run(out, **overrides):
    options = dict(out=str(out), data="synthetic", preset="small", epochs=1, limit=64, val_limit=32,
                   timesteps=2, batch_size=16, device="cuda", progress=False)
    options.update(overrides)
    return train(TrainOptions(**options))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_runs_on_cuda(precision, tmp_path):
    metrics = small_run(tmp_path / precision, precision=precision)
    assert metrics["device"].startswith("cuda") and metrics["optimizer"] == "Adam (fused)"
    assert metrics["config"]["training"]["precision"] == precision
    assert math.isfinite(metrics["epochs"][0]["train_loss"])
    assert torch.backends.cudnn.benchmark
    saved = json.loads((tmp_path / precision / "metrics.json").read_text())
    assert saved["best_accuracy"] == metrics["best_accuracy"]
    state = torch.load(tmp_path / precision / "last.pt", weights_only=True)["state_dict"]
    assert all(v.device.type == "cpu" and v.dtype != torch.bfloat16 for v in state.values())


def test_a_cuda_run_resumes_on_the_cpu(tmp_path):
    """--device may change on --resume; the fused Adam's state (its step
    counters live on the GPU) moves to the CPU with it."""
    small_run(tmp_path / "run")
    metrics = small_run(tmp_path / "run", epochs=2, resume=True, device="cpu")
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2] and metrics["device"] == "cpu"


def test_bf16_autocast_on_cuda(make_active_model, make_probe_images):
    model = rebuild(make_active_model("small"), "fused", CUDA, torch.float32).train()
    seen = []
    model.fc1.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x, y = make_probe_images(8).float().to(CUDA), torch.arange(8, device=CUDA) % 7
    with autocast(CUDA, "bf16"):
        out = model(x)
        loss = output_loss(out, y, 0.1)
    loss.backward()
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert out.sum() > 0
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("resident", [True, False])
def test_batches_on_cuda_match_the_cpu(resident, monkeypatch):
    """The GPU-resident set and the pinned per-batch copy give the CPU's batches."""
    from fer2neuro.data import load_split

    if not resident:
        monkeypatch.setattr(loop, "RESIDENT_BYTES", 0)
    data = load_split("synthetic", "PublicTest", limit=40)
    make = lambda device: Batches(data, 16, device, shuffle=True, flip=True,
                                  generator=torch.Generator().manual_seed(5))
    gpu = make(CUDA)
    assert gpu.resident == resident
    for (xc, yc), (xg, yg) in zip(make(torch.device("cpu")), gpu, strict=True):
        assert xg.device.type == "cuda" and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)


def test_the_memory_estimate_reads_the_devices_free_memory():
    """fer2neuro/memory.py's CUDA branch on a real device: the free memory
    torch reports, not the host's, and a run beyond it is refused."""
    from fer2neuro import memory
    from fer2neuro.errors import ResourceError

    free, total = torch.cuda.mem_get_info(CUDA)
    available = memory.available_bytes("cuda")
    assert 0 < available <= total and abs(available - free) < total // 10
    with pytest.raises(ResourceError, match="cuda has"):
        memory.check_fits(2 * total, "this", "--batch-size", device="cuda")
