"""Derive the point-cloud demo set from CGAL's example meshes (Debian ``libcgal-demo``).

Run once by a maintainer; its output is committed under ``src/adaptlab_pointcloud/demo_data``.
Reproduce with::

    apt-get download libcgal-demo && dpkg -x libcgal-demo_*.deb cgal
    mkdir cgal-data && tar xzf cgal/usr/share/doc/libcgal-dev/data.tar.gz -C cgal-data
    python domains/pointcloud/scripts/derive_demo.py cgal-data/data/meshes

The meshes themselves (about 15 MB for the ones used) are too large to ship; each is sampled
once, uniformly by area with trimesh, to 2,048 surface points with their normals, centred and
scaled into the unit sphere, stored as float16. The dataset draws its scans from these points
(a view, occlusion, density change and sensor noise per scan), so nothing here depends on
the scans' randomness.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import trimesh

POINTS = 2048
SEED = 0
# Coarse classes: CGAL's data set has no labels; these follow what each mesh depicts.
CLASSES = {
    "animal": ["elephant", "camel", "cow", "bull", "pig", "bear", "elk", "lion", "dino",
               "triceratops", "diplodocus", "armadillo", "bunny00", "ChineseDragon-10kv"],
    "human body": ["man", "mannequin-devil", "homer", "head", "hand", "nefertiti", "femur",
                   "bones"],
    "manufactured object": ["fandisk", "rotor", "turbine", "blade", "pinion", "anchor",
                            "joint", "spool", "helmet", "boeing", "couplingdown", "dragknob",
                            "part", "itemb", "mech-holes-shark"],
}


def sample_mesh(path: Path, rng_seed: int) -> np.ndarray:
    mesh = trimesh.load(path, force="mesh")
    points, faces = trimesh.sample.sample_surface(mesh, POINTS, seed=rng_seed)
    normals = mesh.face_normals[faces]
    points = points - points.mean(axis=0)
    points /= np.linalg.norm(points, axis=1).max()
    return np.concatenate([points, normals], axis=1).astype(np.float16)


def main(folder: str) -> None:
    root = Path(folder)
    out = Path(__file__).resolve().parents[1] / "src" / "adaptlab_pointcloud" / "demo_data"
    names, labels, clouds, records = [], [], [], []
    for label, (name_of_class, stems) in enumerate(CLASSES.items()):
        for stem in stems:
            path = root / f"{stem}.off"
            clouds.append(sample_mesh(path, SEED + len(clouds)))
            names.append(stem)
            labels.append(label)
            records.append({"mesh": path.name, "class": name_of_class,
                            "faces": int(len(trimesh.load(path, force="mesh").faces))})
    np.savez_compressed(out / "cgal_meshes.npz", clouds=np.stack(clouds),
                        labels=np.asarray(labels, dtype=np.int64),
                        names=np.asarray(names), classes=np.asarray(list(CLASSES)))
    attribution = {
        "source": "CGAL 5.5.1 example data (Debian package libcgal-demo, "
                  "usr/share/doc/libcgal-dev/data.tar.gz, data/meshes)",
        "license": "CC0-1.0 per Debian's copyright file for CGAL's example data; classic "
                   "scans (bunny, dragon, armadillo) keep their origins' terms of use "
                   "(Stanford 3D Scanning Repository)",
        "sampling": f"{POINTS} surface points + normals per mesh, trimesh sample_surface "
                    "(seed = 0 + mesh index), centred, scaled into the unit sphere, float16",
        "meshes": records,
    }
    (out / "ATTRIBUTION.json").write_text(json.dumps(attribution, indent=1) + "\n")
    print(f"{len(names)} meshes -> {out / 'cgal_meshes.npz'}")


if __name__ == "__main__":
    main(sys.argv[1])
