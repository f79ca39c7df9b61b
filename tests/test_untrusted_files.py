"""A planted pickle never runs: not as a ``.npy``, not as a run's or a checkpoint's weights,
not as a backbone's local weights file; and a model folder's own code never runs unless the
user asks for it. Each refusal is one line that names the file."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adaptlab.errors import AdaptlabError
from conftest import run_cli


class Planted:
    """Unpickling this creates the marker file: proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "EXECUTED"


def plant(path: Path, marker: Path) -> Path:
    """A pickle of tensors-and-a-payload at ``path``, whatever its name claims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weight": torch.zeros(2), "payload": Planted(marker)}))
    return path


def assert_one_line(message: str, *names: str) -> None:
    assert "\n" not in message.strip(), message
    for name in names:
        assert name in message, message


def test_the_planted_pickle_does_run_when_unpickled(tmp_path, marker):
    """The control: without it, a loader that ran the pickle would pass the tests below."""
    pickle.loads(plant(tmp_path / "x.pt", marker).read_bytes())
    assert marker.exists()


# -- (a) .npy and .npz inputs ---------------------------------------------------------------
def _npy_pickles(folder: Path, marker: Path) -> list[Path]:
    """An object array saved with pickle (a real .npy header), and a bare pickle named .npy."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = folder / "objects.npy"
    np.save(objects, np.array([Planted(marker)] * 3, dtype=object), allow_pickle=True)
    return [objects, plant(folder / "bare.npy", marker)]


def test_a_pickled_npy_point_cloud_is_refused(tmp_path, marker):
    from adaptlab_pointcloud.readers import read_points

    for path in _npy_pickles(tmp_path / "clouds", marker):
        with pytest.raises(AdaptlabError) as caught:
            read_points(path)
        assert_one_line(str(caught.value), str(path))
    assert not marker.exists()


def test_pickled_npy_and_npz_scans_are_skipped_by_name(tmp_path, marker):
    from adaptlab_medical.predict_inputs import read_scan_inputs
    from adaptlab_medical.readers import read_medmnist_npz

    folder = tmp_path / "scans"
    planted = _npy_pickles(folder, marker)
    archive = folder / "scans.npz"
    np.savez(archive, images=np.array([Planted(marker)] * 2, dtype=object))
    planted.append(archive)
    np.save(folder / "good.npy", np.arange(64, dtype=np.float32).reshape(8, 8))
    run = SimpleNamespace(data=SimpleNamespace(modality="array-image"))
    with pytest.warns(UserWarning):
        inputs = read_scan_inputs(folder, run)
    assert inputs.names == [str(folder / "good.npy")]
    assert sorted(s["file"] for s in inputs.skipped) == sorted(map(str, planted))
    for skipped in inputs.skipped:
        assert_one_line(skipped["reason"])
    medmnist = tmp_path / "medmnist.npz"
    objects = np.array([Planted(marker)] * 2, dtype=object)
    np.savez(medmnist, **{f"{split}_{kind}": objects for split in ("train", "val", "test")
                          for kind in ("images", "labels")})
    with pytest.raises(AdaptlabError) as caught:
        read_medmnist_npz(medmnist)
    assert_one_line(str(caught.value), str(medmnist))
    assert not marker.exists()


def test_a_zarr_store_with_a_pickle_codec_is_refused(tmp_path, marker):
    """Zarr v2 metadata can name numcodecs' pickle codec for an object array; zarr 3 (the
    weather plugin's floor) refuses it, and this keeps a downgrade from slipping through."""
    from adaptlab_weather.readers import read_event_fields

    store = tmp_path / "fields.zarr"
    (store / "label").mkdir(parents=True)
    (store / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (store / "label" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [2], "chunks": [2], "dtype": "|O", "compressor": None,
        "fill_value": None, "filters": [{"id": "pickle", "protocol": 4}], "order": "C"}))
    (store / "label" / ".zattrs").write_text(json.dumps({"_ARRAY_DIMENSIONS": ["time"]}))
    (store / "label" / "0").write_bytes(pickle.dumps(np.array([Planted(marker)] * 2,
                                                              dtype=object)))
    with pytest.raises(AdaptlabError) as caught:
        read_event_fields(store)
    assert_one_line(str(caught.value), str(store))
    assert not marker.exists()


# -- (b) a run's checkpoints and weights ------------------------------------------------------
def test_a_pickle_in_place_of_a_checkpoint_is_refused(tmp_path, marker):
    from adaptlab.engine.checkpoint import load_latest_checkpoint, save_checkpoint

    root = tmp_path / "checkpoints"
    folder = save_checkpoint(root, 1, {"w": torch.ones(3)}, {"state": {}, "param_groups": []},
                             {"epoch": 1})
    model_file = plant(folder / "model.safetensors", marker)
    for name in ("model.pt", "pytorch_model.bin", "optimizer.pt", "checkpoint.pth"):
        plant(folder / name, marker)  # where a loader that guessed at names might look
    with pytest.raises(AdaptlabError) as caught:
        load_latest_checkpoint(root)
    assert_one_line(str(caught.value), str(model_file))
    assert not marker.exists()


def test_predicting_with_a_planted_adapter_names_it_and_runs_nothing(
        tmp_path, marker, capsys, wildlife_lora_run, colour_folder):
    run_dir = tmp_path / "run"
    shutil.copytree(wildlife_lora_run, run_dir)
    adapter = plant(run_dir / "adapter" / "adapter_model.safetensors", marker)
    plant(run_dir / "adapter" / "adapter_model.bin", marker)  # peft's pickle fallback name
    plant(run_dir / "weights.pt", marker)
    code, _, err = run_cli(["predict", str(run_dir), "--data", str(colour_folder / "red"),
                            "--out", str(tmp_path / "predictions")], capsys)
    assert code == 2
    assert_one_line(err, str(adapter))
    assert not marker.exists()


# -- (c) a backbone's local weights -----------------------------------------------------------
@pytest.mark.parametrize("name", ["weights.pt", "weights.bin", "weights.pth", "weights.ckpt",
                                  "weights.safetensors"])
def test_a_pickled_weights_file_is_refused(tmp_path, marker, name):
    from adaptlab.backbones.weights import load_state_dict_file

    path = plant(tmp_path / name, marker)
    with pytest.raises(AdaptlabError) as caught:
        load_state_dict_file(path)
    assert_one_line(str(caught.value), str(path))
    assert not marker.exists()


def _bert_folder(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]) + "\n")
    return folder


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors"])
@pytest.mark.parametrize("loader", ["encoder", "causal_lm"])
def test_a_pickled_model_folder_is_refused(tmp_path, marker, weights, loader):
    from adaptlab.backbones.causal_lm import load_causal_lm
    from adaptlab.backbones.hf_encoders import hf_encoder

    folder = _bert_folder(tmp_path / "model")
    (folder / "model.safetensors").unlink()
    planted = plant(folder / weights, marker)
    with pytest.raises(AdaptlabError) as caught:
        if loader == "encoder":
            hf_encoder({"model_id": str(folder)})
        else:
            load_causal_lm(folder)
    assert_one_line(str(caught.value), str(planted))
    assert not marker.exists()


# -- Hugging Face remote code -----------------------------------------------------------------
REMOTE_CODE = """
from pathlib import Path
Path({marker!r}).touch()
from transformers import BertConfig, BertModel, BertLMHeadModel
class PlantedConfig(BertConfig):
    model_type = "planted"
class PlantedModel(BertModel):
    config_class = PlantedConfig
class PlantedLm(BertLMHeadModel):
    config_class = PlantedConfig
"""


def _remote_code_folder(folder: Path, marker: Path, model_type: str | None) -> Path:
    """A model folder whose config asks for its own code (``auto_map``), which would create
    the marker when imported."""
    _bert_folder(folder)
    (folder / "planted.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    config = json.loads((folder / "config.json").read_text())
    config.pop("model_type")
    if model_type:
        config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "planted.PlantedConfig",
                          "AutoModel": "planted.PlantedModel",
                          "AutoModelForCausalLM": "planted.PlantedLm",
                          "AutoTokenizer": ["planted.PlantedTokenizer", None]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("loader", ["encoder", "causal_lm"])
def test_a_folder_asking_for_its_own_code_is_refused(tmp_path, marker, monkeypatch, loader):
    from adaptlab.backbones.causal_lm import load_causal_lm
    from adaptlab.backbones.hf_encoders import hf_encoder

    # transformers asks "run the custom code? [y/N]" when trust_remote_code is left unset:
    # a hurried "y" must find no question to answer.
    monkeypatch.setattr("builtins.input", lambda *_: "y")
    folder = _remote_code_folder(tmp_path / "model", marker, model_type=None)
    with pytest.raises(AdaptlabError) as caught:
        if loader == "encoder":
            hf_encoder({"model_id": str(folder)})
        else:
            load_causal_lm(folder)
    assert not marker.exists()
    assert_one_line(str(caught.value), str(folder), "custom code")


def test_a_known_architecture_with_an_auto_map_loads_without_its_code(
        tmp_path, marker, monkeypatch):
    from adaptlab.backbones.hf_encoders import hf_encoder

    monkeypatch.setattr("builtins.input", lambda *_: "y")
    folder = _remote_code_folder(tmp_path / "model", marker, model_type="bert")
    backbone = hf_encoder({"model_id": str(folder)})
    assert type(backbone.module.encoder).__name__ == "BertModel"
    assert not marker.exists()
