"""Derive the medical demo: 2D axial T1 patches labelled by coarse brain region.

Run once by a maintainer; the output is committed under ``src/adaptlab_medical/demo_data``.

    apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron
    pip download --no-deps nilearn==0.14.1 && unzip nilearn-*.whl 'nilearn/datasets/data/*' -d nl
    python domains/medical/scripts/derive_demo.py \
        mricron/usr/share/mricron/templates nl/nilearn/datasets/data

Target: the Colin27 single-subject T1 (``ch2.nii.gz``) with the AAL atlas, which was drawn on
this very brain (``aal.nii.gz``, same grid). Source: the MNI ICBM152 2009a symmetric average of
152 brains (nilearn's bundled copy), labelled through the same atlas by world coordinates;
both are in MNI space, so the label transfer is an offset, not a registration.

Labels: the AAL region code's leading digit gives a coarse lobe (2 frontal, 5 occipital,
6 parietal, 7 subcortical, 8 temporal, 9 cerebellum; insula and limbic regions are left out).
The target is split by hemisphere: the left hemisphere trains (and validates), the right one
is the held-out test, and no patch crosses the midline, so no test voxel is seen in training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

CLASSES = ["frontal", "occipital", "parietal", "subcortical", "temporal", "cerebellum"]
LOBE_BY_DIGIT = {2: "frontal", 5: "occipital", 6: "parietal", 7: "subcortical", 8: "temporal",
                 9: "cerebellum"}
HALF = 12  # patches are 24 x 24 voxels (1 mm)
PER_CLASS_TARGET = 60  # per hemisphere
PER_CLASS_SOURCE = 120
SEED = 0


def lobe_lookup(txt: Path) -> np.ndarray:
    """AAL index (1..116) -> class index, or -1 for regions left out."""
    lookup = np.full(256, -1, dtype=np.int64)
    for line in txt.read_text().splitlines():
        if len(line.split()) < 3:
            continue
        index, _name, code = line.split()[:3]
        lobe = LOBE_BY_DIGIT.get(int(code) // 1000)
        if lobe is not None:
            lookup[int(index)] = CLASSES.index(lobe)
    return lookup


def sample_patches(t1: np.ndarray, labels: np.ndarray, centres_mask: np.ndarray, per_class: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    patches, ys, where = [], [], []
    for cls in range(len(CLASSES)):
        candidates = np.argwhere((labels == cls) & centres_mask)
        chosen = candidates[rng.choice(len(candidates), size=min(per_class, len(candidates)),
                                       replace=False)]
        for i, j, k in chosen:
            patch = t1[i - HALF:i + HALF, j - HALF:j + HALF, k]
            patches.append(patch.T[::-1])  # radiological display: anterior up
            ys.append(cls)
            where.append((i, j, k))
    return np.stack(patches).astype(np.uint8), np.array(ys), np.array(where)


def interior(shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[HALF:-HALF, HALF:-HALF, :] = True
    return mask


def derive(mricron: Path, nilearn_data: Path, out: Path) -> None:
    rng = np.random.default_rng(SEED)
    lookup = lobe_lookup(mricron / "aal.nii.txt")
    aal_img = nib.load(mricron / "aal.nii.gz")
    aal = lookup[np.asarray(aal_img.dataobj).astype(np.int64)]
    colin = np.asarray(nib.load(mricron / "ch2.nii.gz").dataobj)
    x_world = np.arange(aal.shape[0])[:, None, None] + aal_img.affine[0, 3]
    left = (x_world <= -HALF - 1) & interior(aal.shape)
    right = (x_world >= HALF + 1) & interior(aal.shape)
    train_x, train_y, train_at = sample_patches(colin, aal, left, PER_CLASS_TARGET, rng)
    test_x, test_y, test_at = sample_patches(colin, aal, right, PER_CLASS_TARGET, rng)
    np.savez_compressed(out / "colin27_aal_patches.npz", train_x=train_x, train_y=train_y,
                        train_at=train_at, test_x=test_x, test_y=test_y, test_at=test_at,
                        classes=np.array(CLASSES))

    icbm_img = nib.load(nilearn_data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    icbm = np.asarray(icbm_img.dataobj)
    # Both grids are 1 mm and axis-aligned: world = voxel + origin, so the AAL label of an
    # ICBM voxel is at the voxel shifted by the difference of the origins.
    shift = (icbm_img.affine[:3, 3] - aal_img.affine[:3, 3]).astype(int)
    labels = np.full(icbm.shape, -1, dtype=np.int64)
    src = [slice(max(0, -s), min(n, m - s)) for s, n, m in zip(shift, icbm.shape, aal.shape, strict=True)]
    dst = [slice(sl.start + s, sl.stop + s) for sl, s in zip(src, shift, strict=True)]
    labels[tuple(src)] = aal[tuple(dst)]
    source_x, source_y, source_at = sample_patches(icbm, labels, interior(icbm.shape),
                                                   PER_CLASS_SOURCE, rng)
    np.savez_compressed(out / "icbm152_aal_patches.npz", x=source_x, y=source_y, at=source_at,
                        classes=np.array(CLASSES))
    (out / "SOURCES.json").write_text(json.dumps({
        "colin27_aal_patches.npz": {
            "from": "Debian package mricron-data: templates/ch2.nii.gz (Colin27 T1), "
                    "templates/aal.nii.gz and aal.nii.txt (AAL atlas)",
            "licence": "BSD-3-clause (Debian copyright of mricron-data); the AAL atlas: "
                       "Tzourio-Mazoyer et al., NeuroImage 15:273-289, 2002",
            "split": "train = left hemisphere, test = right hemisphere, no patch crosses x=0"},
        "icbm152_aal_patches.npz": {
            "from": "PyPI nilearn 0.14.1 wheel: datasets/data/"
                    "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz; labels from AAL above",
            "licence": "ICBM 2009a template: Copyright (C) 1993-2009 Louis Collins, McConnell "
                       "Brain Imaging Centre, Montreal Neurological Institute; free use with "
                       "this notice (see the nilearn and MNI distribution terms)"},
        "classes": CLASSES, "patch": "24 x 24 voxels, 1 mm, axial, uint8 T1 intensities",
    }, indent=1) + "\n")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent / "src" / "adaptlab_medical" / "demo_data"
    derive(Path(sys.argv[1]), Path(sys.argv[2]), here)
