"""How a training run starts: every N optimizer steps, the loss, the accuracy on
held-out faces, each spiking layer's firing rate and the gradient norms of
the first and last layers. For studying the slow start (docs/training.md).

    python benchmarks/learning_probe.py [--init he|rate] [--steps 250] [--every 25] [--limit 2000]

Synthetic data, small preset, T = 4, batch 16, Adam lr 1e-3, rate MSE with
label smoothing 0.1: the setting of the fast-start target of issue 12.
"""
from __future__ import annotations

import argparse

import torch

from fer2neuro.data import load_splits
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model, predict
from fer2neuro.training.init import rate_initialise
from fer2neuro.training.loop import Batches
from fer2neuro.training.losses import rate_mse_loss
from fer2neuro.training.optim import build_optimizer



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", choices=["he", "rate"], default="he")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--probe", type=int, default=128, help="held-out faces to measure on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    splits = load_splits("synthetic", {"Training": args.limit, "PublicTest": args.probe}, seed=args.seed)
    train, held = splits["Training"], splits["PublicTest"]
    model = build_model(preset_config("small", timesteps=4, class_names=train.class_names))
    LAYERS = model.neuron_layers
    if args.init == "rate":
        rate_initialise(model, train.subset(range(256)).tensors()[0])
    optimizer = build_optimizer(model.parameters(), 1e-3, "cpu")
    batches = Batches(train, 16, torch.device("cpu"), shuffle=True, flip=True,
                      generator=torch.Generator().manual_seed(args.seed))
    x_held, y_held = held.tensors()
    print(f"{'step':>5} {'loss':>7} {'acc':>6} " + " ".join(f"{n:>7}" for n in LAYERS)
          + "  |grad| conv1 / fc1 / fc3")
    step = 0
    while step < args.steps:
        for x, y in batches:
            model.train()
            loss = rate_mse_loss(model(x), y, 0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.every == 0:
                model.eval()
                with torch.no_grad():
                    trace = model.record(x_held)
                accuracy = (predict(trace["lif_out"]) == y_held).float().mean().item()
                grads = [model.get_parameter(n).grad.norm().item() for n in ("conv1.weight", "fc1.weight", "fc3.weight")]
                print(f"{step:>5} {loss.item():>7.4f} {accuracy:>6.3f} "
                      + " ".join(f"{trace[n].mean().item():>7.3f}" for n in LAYERS)
                      + "  " + " / ".join(f"{g:.1e}" for g in grads), flush=True)
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
