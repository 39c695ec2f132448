"""fer2neuro's Python API in a few lines: data -> model -> training -> evaluation.

    python examples/quickstart.py [--steps 40] [--out /tmp/quickstart.pt]
"""
import argparse

import torch

from fer2neuro.data import load_splits
from fer2neuro.model.checkpoint import load_model, save_checkpoint
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.training.loop import Batches, evaluate_model
from fer2neuro.training.losses import rate_mse_loss
from fer2neuro.training.metrics import Evaluation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="training steps (batches of 16)")
    parser.add_argument("--out", default="/tmp/fer2neuro-quickstart.pt")
    args = parser.parse_args()
    torch.manual_seed(0)

    # 1. data: the built-in synthetic faces (or a FER2013 CSV path instead of "synthetic")
    splits = load_splits("synthetic", {"Training": None, "PublicTest": 350})
    train, test = splits["Training"], splits["PublicTest"]
    print(f"{len(train)} training / {len(test)} test faces, classes {train.class_names}")

    # 2. model: the paper's structure at CPU width, T = 4 steps, direct encoding
    config = preset_config("small", timesteps=4, class_names=train.class_names)
    model = build_model(config)

    # 3. a few steps of surrogate-gradient training (Adam, rate-MSE loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    batches = iter(Batches(train, 16, torch.device("cpu"), shuffle=True))
    for step in range(1, args.steps + 1):
        images, labels = next(batches)
        output_spikes = model(images)                  # (T, batch, classes)
        loss = rate_mse_loss(output_spikes, labels, smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            print(f"step {step}: loss {loss.item():.4f}")

    # 4. evaluate, save, reload
    result: Evaluation = evaluate_model(model, test)
    print(result.table())
    save_checkpoint(args.out, model, config)
    reloaded, ckpt = load_model(args.out)
    spikes = reloaded.record(test.tensors()[0][:4])   # every layer's spikes, (T, B, ...)
    rates = {name: round(float(s.mean()), 3) for name, s in spikes.items() if name != "input"}
    print(f"saved {args.out}; firing rates per layer on 4 faces: {rates}")


if __name__ == "__main__":
    main()
