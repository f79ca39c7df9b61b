"""Derive the wildlife demo set from the GCompris data package (Debian ``gcompris-qt-data``).

Run once by a maintainer; its output is committed under ``src/adaptlab_wildlife/demo_data``.
Reproduce with::

    apt-get download gcompris-qt-data && dpkg -x gcompris-qt-data_*.deb gcompris
    python domains/wildlife/scripts/derive_demo.py gcompris/usr/share/gcompris-qt/rcc

GCompris ships its images inside Qt resource bundles (``.rcc``). No maintained Python reader
for that format exists on PyPI, so a short parser lives here (format v1-v3, zlib entries).

The photos are labelled by taxonomic class (one photo per species is all the package has, so
species are grouped into mammal / bird / reptile / fish / invertebrate; the classes are unequal
in size on purpose, as wildlife data are). Cartoon drawings of animals from the same package
form a source domain with the same classes.
"""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

SHORT_SIDE = 256
JPEG_QUALITY = 90

# bundle -> (folder inside the bundle, {file stem: class})
PHOTOS = {
    "explore_world_animals.rcc": ("explore_world_animals/resource/animals", {
        "bison": "mammal", "chameleon": "reptile", "crocodile": "reptile", "dragon": "reptile",
        "giraffe": "mammal", "hedgehog": "mammal", "jaguar": "mammal", "kangaroo": "mammal",
        "koala": "mammal", "lemur": "mammal", "moose": "mammal", "narwhal": "mammal",
        "panda": "mammal", "polar_bear": "mammal", "scarlet_macaw": "bird",
    }),
    "explore_farm_animals.rcc": ("explore_farm_animals/resource/animals", {
        "cat": "mammal", "chicken": "bird", "cow": "mammal", "dog": "mammal", "duck": "bird",
        "horse": "mammal", "owl": "bird", "pig": "mammal", "sheep": "mammal",
    }),
    "erase.rcc": ("erase/resource", {
        "alpaca": "mammal", "bee": "invertebrate", "butterfly": "invertebrate", "calf": "mammal",
        "camels": "mammal", "caterpillar": "invertebrate", "chamaeleon": "reptile",
        "cheetah": "mammal", "crab": "invertebrate", "dolphin": "mammal", "flying_fox": "mammal",
        "gibbon": "mammal", "giraffe": "mammal", "goat": "mammal", "gorilla": "mammal",
        "gosling": "bird", "heron": "bird", "horse": "mammal", "kingfisher": "bird",
        "kitten": "mammal", "long_nosed_monkey": "mammal", "macaque": "mammal",
        "meerkats": "mammal", "northern_harrier": "bird", "nubian_ibex": "mammal",
        "penguin": "bird", "pika": "mammal", "red_panda": "mammal", "rhinoceros": "mammal",
        "spoonbills": "bird", "squirrel": "mammal", "swans": "bird", "toucan": "bird",
    }),
    "categorization.rcc": ("categorization/resource/images/fishes",
                           {f"fish{i}": "fish" for i in range(1, 29)}),
}
CARTOONS = {
    "lang.rcc": ("lang/resource/words_sample", {
        "bear": "mammal", "bull": "mammal", "camel": "mammal", "cat": "mammal", "cow": "mammal",
        "dog": "mammal", "dolphin": "mammal", "fox": "mammal", "giraffe": "mammal",
        "gorilla": "mammal", "hedgehog": "mammal", "hippopotamus": "mammal", "horse": "mammal",
        "kangaroo": "mammal", "mouse": "mammal", "panda": "mammal", "pig": "mammal",
        "rabbit": "mammal", "rhinoceros": "mammal", "sheep": "mammal", "whale": "mammal",
        "wolf": "mammal", "bird": "bird", "chicken": "bird", "duck": "bird", "owl": "bird",
        "turkey": "bird", "lizard": "reptile", "reptile": "reptile", "snake": "reptile",
        "turtle": "reptile", "dragon": "reptile", "fish": "fish", "shark": "fish",
        "bee": "invertebrate", "beetle": "invertebrate", "bug": "invertebrate",
        "butterfly": "invertebrate", "flies": "invertebrate", "mosquito": "invertebrate",
        "snail": "invertebrate", "spider": "invertebrate",
    }),
}
CARTOON_LICENCE = {
    "copyright": "Art4Apps (art4apps.org), via GCompris",
    "license": "CC-BY-SA-3.0",
    "source": "GCompris lang activity, words_sample",
}


def read_rcc(path: Path) -> dict[str, bytes]:
    """Every file in a Qt resource bundle, by its path inside the bundle."""
    blob = path.read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource bundle (magic {blob[:4]!r})")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    entry_size = 14 + (8 if version >= 2 else 0)

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        start = names + offset + 6  # skip length and hash
        return blob[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        pos = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[pos : pos + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", blob[pos + 6 : pos + 14])
            for child in range(count):
                walk(first + child, f"{prefix}{name}/" if index else "")
            return
        (data_offset,) = struct.unpack(">I", blob[pos + 10 : pos + 14])
        (size,) = struct.unpack(">I", blob[data + data_offset : data + data_offset + 4])
        raw = blob[data + data_offset + 4 : data + data_offset + 4 + size]
        files[prefix + name] = zlib.decompress(raw[4:]) if flags & 1 else raw

    walk(0, "")
    return files


def parse_readme_licences(text: str) -> dict[str, dict[str, str]]:
    """GCompris READMEs list blocks of ``Key: value`` lines followed by ``Files:`` names."""
    result: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        files: list[str] = []
        in_files = False
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in {"Copyright", "License", "Source", "Comments"}:
                fields[key.strip().lower()] = value.strip()
                in_files = False
            elif sep and key.strip() == "Files":
                in_files = True
                files += value.split()
            elif in_files and line.strip():
                files += line.split()
        for name in files:
            result[name] = fields
    return result


def to_jpeg(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    if image.mode in ("RGBA", "LA", "P"):
        # Drawings are transparent; flattening onto black would hide dark outlines.
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    image = image.convert("RGB")
    scale = SHORT_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def derive(rcc_dir: Path, out_dir: Path) -> None:
    attribution = []
    for split_name, table in (("photos", PHOTOS), ("cartoons", CARTOONS)):
        for bundle, (folder, labels) in table.items():
            files = read_rcc(rcc_dir / bundle)
            readme = next((v for k, v in files.items() if k.endswith(f"{folder}/README")), b"")
            licences = parse_readme_licences(readme.decode("utf-8"))
            for stem, label in sorted(labels.items()):
                key = next(k for k in files if k.endswith(f"{folder}/{stem}.webp"))
                target = out_dir / split_name / label / f"{stem}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(to_jpeg(files[key]))
                meta = CARTOON_LICENCE if split_name == "cartoons" else licences[f"{stem}.webp"]
                attribution.append({"file": str(target.relative_to(out_dir)), "class": label,
                                    "bundle": bundle, "original": f"{stem}.webp", **meta})
    (out_dir / "ATTRIBUTION.json").write_text(json.dumps(attribution, indent=1) + "\n")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent
    derive(Path(sys.argv[1]), here / "src" / "adaptlab_wildlife" / "demo_data")
