"""``--set KEY=VALUE`` (typed, nested, refused with the nearest key) and ``--print-config``."""

import pytest
import yaml
from helpers.errors import raises_option

from detnorm.cli.train import main, parse_config
from detnorm.config import DEFAULTS, build_config
from detnorm.config.overrides import model_kwargs_keys, parse_sets


def test_values_are_typed_by_the_option_types():
    layer = parse_sets(
        ["base_lr=1", "max_steps=50", "name=123", "train_scales=640", "logger=[csv, tensorboard]",
         "keep_empty=true", "box_head=null", "data=/tmp"],
    )  # fmt: skip
    assert layer == {"base_lr": 1.0, "max_steps": 50, "name": "123", "train_scales": [640],
                     "logger": ["csv", "tensorboard"], "keep_empty": True, "box_head": None,
                     "data": "/tmp"}  # fmt: skip
    assert isinstance(layer["base_lr"], float)


def test_nested_model_kwargs_merge_key_by_key():
    cfg = parse_config(["--config", "configs/cpu/base.yaml",
                        "--set", "model_kwargs.box_detections_per_img=300",
                        "--set", "model_kwargs.anchor_sizes=[8, 16, 32, 64, 128]"])  # fmt: skip
    base = build_config(["configs/cpu/base.yaml"])
    assert cfg["model_kwargs"] == {**base["model_kwargs"], "box_detections_per_img": 300,
                                   "anchor_sizes": [8, 16, 32, 64, 128]}  # fmt: skip


def test_set_wins_over_flags_and_files_and_is_validated():
    cfg = parse_config(["--norm", "bn", "--set", "norm=gn", "--set", "gn_groups=16"])
    assert (cfg["norm"], cfg["gn_groups"]) == ("gn", 16)
    with raises_option("--gn-groups: must be an integer"):
        parse_config(["--set", "gn_groups=two"])
    with raises_option("--depth"):
        parse_config(["--set", "depth=19"])


@pytest.mark.parametrize(
    "item, nearest",
    [
        ("base_lrr=0.1", "'base_lr'"),
        ("max_step=10", "'max_steps'"),
        ("lerning_rate=0.1", "'base_lr'"),  # through the alias learning_rate
        ("model_kwargs.box_detections_per_image=300", "'box_detections_per_img'"),
        ("model_kwargs.rpn_batch_size=64", "'rpn_batch_size_per_image'"),
    ],
)
def test_unknown_keys_name_the_nearest_one(item, nearest):
    with raises_option(f"^--set: {item}: unknown") as e:
        parse_sets([item])
    assert e.value.key == "set" and f"did you mean {nearest}?" in e.value.message


@pytest.mark.parametrize("item", ["base_lr", "=3", "depth.x=1", "model_kwargs=3"])
def test_malformed_items_are_refused(item):
    with raises_option(f"^--set: {item}: "):
        parse_sets([item])


def test_model_kwargs_keys_are_torchvisions_and_the_builders():
    keys = model_kwargs_keys()
    for key in ("box_detections_per_img", "rpn_post_nms_top_n_test", "min_size", "box_fg_iou_thresh",
                "fpn_channels", "anchor_sizes"):  # fmt: skip
        assert key in keys
    assert "backbone" not in keys and "num_classes" not in keys


def test_print_config_prints_the_resolved_yaml_and_exits(tmp_path, capsys):
    out = tmp_path / "never"
    argv = ["--norm", "gn", "--set", "model_kwargs.box_detections_per_img=300",
            "--accumulate-grad-batches", "4", "--output-dir", str(out)]  # fmt: skip
    assert main([*argv, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == parse_config(argv)
    assert set(printed) == set(DEFAULTS)
    assert printed["model_kwargs"]["box_detections_per_img"] == 300
    assert not out.exists()  # nothing ran
    # the printed YAML is a config file that resolves to the same config
    path = tmp_path / "printed.yaml"
    path.write_text(yaml.safe_dump(printed))
    assert build_config([path]) == printed


def test_bad_set_exits_2_with_one_line(capsys):
    assert main(["--set", "lerning_rate=0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detnorm-train: error: --set: lerning_rate=0.1:")
