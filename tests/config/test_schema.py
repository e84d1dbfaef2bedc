"""The option schema is the one definition of every option: each appears in ``--help``,
validates, is refused with its key when bad, and round-trips through ``config.yaml`` and a
checkpoint; ``DetnormModule`` and ``build_maskrcnn`` take the schema's model options."""

import inspect

import pytest
import torch
import yaml

from detnorm.cli.parser import flag_label
from detnorm.cli.train import build_parser, main
from detnorm.config import (
    DEFAULTS,
    MODULE_KEYS,
    OPTIONS,
    ConfigError,
    build_config,
    load_yaml,
    validate,
    write_yaml,
)
from detnorm.config.overrides import parse_sets
from detnorm.engine.module import DetnormModule
from detnorm.modeling.maskrcnn import build_maskrcnn


@pytest.fixture
def examples(tmp_path):
    """A valid value other than the default for every option."""
    (tmp_path / "ann.json").write_text("{}")
    (tmp_path / "images").mkdir()
    (tmp_path / "w.pt").write_bytes(b"")
    special = {
        "data": str(tmp_path), "train_ann": str(tmp_path / "ann.json"),
        "val_ann": str(tmp_path / "ann.json"), "train_images": str(tmp_path / "images"),
        "val_images": str(tmp_path / "images"), "pretrained": str(tmp_path / "w.pt"),
        "resume": str(tmp_path / "w.pt"), "pretrained_prefix": "module.", "name": "run7",
        "output_dir": str(tmp_path / "out"), "train_scales": [640, 800],
        "scale_jitter": [0.5, 2.0], "color_jitter": [0.1, 0.2, 0.3, 0.05], "logger": ["csv"],
        "model_kwargs": {"box_fc_dim": 128},
    }  # fmt: skip
    out = {}
    for key, opt in OPTIONS.items():
        if key in special:
            out[key] = special[key]
        elif opt.choices is not None:
            out[key] = next(c for c in opt.choices if c != opt.default and c is not None)
        elif opt.type is bool:
            out[key] = not opt.default
        elif opt.type is int:
            out[key] = int(opt.low) + 1 if opt.default != int(opt.low) + 1 else int(opt.low) + 2
        elif opt.type is float:
            out[key] = 0.5 if opt.default != 0.5 else 0.25
    missing = set(OPTIONS) - set(out)
    assert not missing, f"no example value for {sorted(missing)}: add one"
    return out


def test_every_option_with_a_flag_is_in_help_and_the_others_are_settable():
    text = build_parser().format_help()
    for key, opt in OPTIONS.items():
        if opt.flags:
            assert opt.flags[0] in text, key
            assert " ".join(opt.help.split()[:3]) in " ".join(text.split()), key
        else:
            value = "{}" if opt.type is dict else "null"
            assert key in parse_sets([f"{key}={value}"])


def test_defaults_validate_and_each_example_validates(examples):
    validate(dict(DEFAULTS))
    for key, value in examples.items():
        validate({key: value})


@pytest.mark.parametrize("key", list(OPTIONS))
def test_a_bad_value_is_refused_with_its_key(key):
    opt = OPTIONS[key]
    bad = {bool: "yes", int: "three", float: "fast", list: 7, dict: [1]}.get(opt.type, 42)
    if opt.type is str and opt.choices is None and opt.extra is None:
        pytest.skip(f"{key}: any text is allowed")
    with pytest.raises(ConfigError) as info:
        validate({key: bad})
    assert info.value.key == key
    assert key not in info.value.message  # the front end adds the name, in its own spelling


def test_every_option_round_trips_through_config_yaml(examples, tmp_path):
    path = write_yaml(tmp_path / "config.yaml", examples)
    assert load_yaml(path) == examples
    assert build_config([path])["model_kwargs"] == {**examples["model_kwargs"]}


def test_unknown_keys_name_the_nearest_option(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("gn_group: 16\n")
    with pytest.raises(ConfigError, match="did you mean 'gn_groups'") as info:
        load_yaml(path)
    assert info.value.key == "config" and str(path) in info.value.message
    with pytest.raises(ConfigError, match="did you mean 'base_lr'"):
        build_config([], sets=parse_sets(["learning_rate=0.1"]))


def test_module_and_builder_take_the_schema_model_options():
    builder = inspect.signature(build_maskrcnn).parameters
    for key in MODULE_KEYS:
        if OPTIONS[key].section == "model" and key != "model_kwargs":
            assert key in builder, f"build_maskrcnn has no {key}"
            if OPTIONS[key].default is not None:
                assert builder[key].default == OPTIONS[key].default, key
    with pytest.raises(ConfigError, match="did you mean 'gn_groups'") as info:
        DetnormModule(num_classes=3, label_to_cat_id={"1": 1, "2": 2}, category_names=["a", "b"],
                      gn_group=8)  # fmt: skip
    assert info.value.key == "gn_group"


def test_builder_errors_reach_the_flag_by_key(tiny_data, capsys):
    """GN's divisibility is found deep in the model build; the CLI names --gn-groups."""
    code = main(["--data", str(tiny_data), "--depth", "18", "--norm", "gn", "--gn-groups", "48"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("detnorm-train: error: --gn-groups: ")
    assert "not divisible by 48 groups" in err[0]


def test_labels_of_keys():
    assert flag_label("gn_groups") == "--gn-groups"
    assert flag_label("config") == "--config"
    assert flag_label("input_format") == "input_format"  # no flag of its own
    assert flag_label("model_kwargs.anchor_sizes") == "model_kwargs.anchor_sizes"


def test_options_round_trip_through_a_checkpoint(tiny_data, tmp_path):
    """A real run: config.yaml, the checkpoint's hyperparameters and its saved config agree."""
    out = tmp_path / "run"
    argv = ["--data", str(tiny_data), "--depth", "18", "--norm", "gn", "--gn-groups", "16",
            "--train-scales", "64", "--test-size", "64", "--max-size", "96", "--batch-size",
            "2", "--num-workers", "0", "--max-steps", "1", "--accelerator", "cpu",
            "--optimizer", "adamw", "--base-lr", "0.001", "--lr-schedule", "cosine",
            "--set", "momentum=0.8", "--set", "weight_decay=0.001", "--set", "warmup_factor=0.01",
            "--set", "model_kwargs.fpn_channels=32", "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["detnorm_config"] == saved
    hp = ckpt["hyper_parameters"]
    norms = ("backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm")  # resolved in the yaml
    for key in MODULE_KEYS:
        if key not in ("model_kwargs", "box_head", *norms):
            assert hp[key] == saved[key], key
    assert hp["box_head"] is None and saved["box_head"] == "4conv1fc"  # GN head: 4conv1fc
    assert {f"{c}_norm": n for c, n in DetnormModule.from_hparams(hp).norms.items()} == {
        k: saved[k] for k in norms
    }
    assert hp["model_kwargs"]["fpn_channels"] == 32
    assert hp["num_classes"] == saved["num_classes"] == 7  # 6 shapes + the background
    module = DetnormModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt")
    assert (
        module.hparams.gn_groups == 16
        and module.model.roi_heads.box_predictor.cls_score.out_features == 7
    )


def test_checkpoints_that_counted_classes_without_the_background_still_load(tiny_data, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", str(tiny_data), "--depth", "18", "--norm", "gn", "--train-scales", "64",
            "--test-size", "64", "--max-size", "96", "--batch-size", "2", "--num-workers", "0",
            "--max-steps", "1", "--accelerator", "cpu", "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    path = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["num_classes"] -= 1  # as checkpoints before the change wrote it
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    module = DetnormModule.load_from_checkpoint(old)
    assert module.hparams.num_classes == 7
    state = DetnormModule.load_from_checkpoint(path).state_dict()
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
