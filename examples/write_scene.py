"""Write a photo-like image for ``fer2neuro predict``: a built-in synthetic
PublicTest face, enlarged, in a larger scene of noise. Prints the face's
true class. The first face OpenCV's detector finds there is used (it finds
most of the synthetic faces, not all: they are drawn, not photographed).

    python examples/write_scene.py demo-run/scene.png
"""
import sys

from fer2neuro.atomic import atomic_path
from fer2neuro.data import load_splits
from fer2neuro.photos import encode_png, find_faces, scene_with_face


def main(out: str) -> None:
    faces = load_splits("synthetic", {"PublicTest": 100})["PublicTest"]
    for image, label in zip(faces.images, faces.labels):
        scene, _ = scene_with_face(image)
        if find_faces(scene):
            with atomic_path(out) as tmp:
                tmp.write_bytes(encode_png(scene[..., None]))
            print(f"wrote {out}: a synthetic '{faces.class_names[label]}' face in a 480x360 scene")
            return
    raise SystemExit("no synthetic face was detected")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "scene.png")
