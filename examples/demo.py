"""`make demo`: the main job on the built-in synthetic faces, every step timed.

train -> evaluate -> figures -> export (NIR, Lava, ONNX) -> verify every
backend -> fine-tune for Loihi (QAT) -> verify again -> predict a photo.

Each step is a `fer2neuro` command, printed as you would type it and run in
this one process (python, torch and Lava load once instead of once per
command: about two seconds a command on a 2-core machine). The demo stops at
the first step that fails, with that step's exit status.

    python examples/demo.py [RUN_DIR]          # default: demo-run
"""
from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from write_scene import main as write_scene  # noqa: E402


def steps(run: str) -> list[tuple[str, list[str]]]:
    return [
        ("network summary", ["summary", "--preset", "small"]),
        ("train (10 epochs)", ["train", "--data", "synthetic", "--preset", "small", "--epochs", "10", "--out", run]),
        ("evaluate on PublicTest", ["evaluate", f"{run}/best.pt", "--data", "synthetic", "--split", "PublicTest"]),
        ("the paper's figures", ["visualize", f"{run}/best.pt", "--out", f"{run}/figures"]),
        ("efficiency report", ["report", f"{run}/best.pt", "--samples", "64"]),
        ("export NIR", ["export", f"{run}/best.pt", "--target", "nir", "--out", f"{run}/model.nir"]),
        ("export Lava", ["export", f"{run}/best.pt", "--target", "lava", "--out", f"{run}/lava"]),
        ("export ONNX", ["export", f"{run}/best.pt", "--target", "onnx", "--out", f"{run}/model.onnx"]),
        ("Loihi 2 resources", ["report", f"{run}/best.pt", "--target", "loihi"]),
        ("verify nir, onnx, loihi on 700 faces",
         ["verify", f"{run}/best.pt", "--backends", "nir,onnx,loihi", "--nir", f"{run}/model.nir", "--onnx",
          f"{run}/model.onnx", "--lava", f"{run}/lava", "--samples", "700", "--batch-size", "64",
          "--report", f"{run}/verify.json", "--plot", f"{run}/verify.png"]),
        ("verify every backend, Lava too, on 4 faces",
         ["verify", f"{run}/best.pt", "--backends", "all", "--nir", f"{run}/model.nir", "--lava", f"{run}/lava",
          "--onnx", f"{run}/model.onnx", "--samples", "4", "--report", f"{run}/verify-all.json",
          "--plot", f"{run}/verify-all.png"]),
        ("fine-tune for Loihi (QAT)",
         ["finetune", f"{run}/best.pt", "--qat", "loihi", "--epochs", "2", "--limit", "2000", "--eval-limit", "700",
          "--out", f"{run}/qat"]),
        ("verify the fine-tuned model on loihi, 700 faces",
         ["verify", f"{run}/qat/best.pt", "--backends", "loihi", "--samples", "700", "--batch-size", "64",
          "--report", f"{run}/verify-qat.json"]),
        ("write a photo-like image", [f"{run}/scene.png"]),
        ("predict it on loihi",
         ["predict", f"{run}/scene.png", "--model", f"{run}/qat/best.pt", "--target", "loihi", "--margin", "0.16",
          "--annotate", f"{run}/annotated"]),
    ]


def main(run: str = "demo-run") -> int:
    from fer2neuro.cli import main as cli

    shutil.rmtree(run, ignore_errors=True)
    times, started = [], time.perf_counter()
    for name, args in steps(run):
        shown = (f"python examples/write_scene.py {args[0]}" if name == "write a photo-like image"
                 else "fer2neuro " + shlex.join(args))
        print(f"\n== {name}: {shown}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            if name == "write a photo-like image":
                write_scene(args[0])
            else:
                status = cli.main(args, prog_name="fer2neuro", standalone_mode=False)
                if isinstance(status, int) and status != 0:        # a command that exits non-zero (verify)
                    print(f"demo stopped: '{name}' exited with {status}", file=sys.stderr)
                    return status
        except SystemExit as exc:                   # click's exit for errors it printed itself
            if exc.code not in (0, None):
                print(f"demo stopped: '{name}' failed", file=sys.stderr)
                return int(exc.code) if isinstance(exc.code, int) else 1
        except Exception as exc:                    # a user error the group would print as one line
            print(f"Error: {exc}\ndemo stopped: '{name}' failed", file=sys.stderr)
            return 1
        times.append((time.perf_counter() - t0, name))
        print(f"== {name}: {times[-1][0]:.1f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    print(f"\ndemo done in {total:.0f} s; each step:")
    for seconds, name in times:
        print(f"  {seconds:6.1f} s  {name}")
    print(f"everything is in {run}/ (checkpoints, figures, model.nir, lava/, model.onnx, verify*.json, annotated/)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
