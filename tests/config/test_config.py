"""Config stacking (files in order, last wins; flags win; ``base:`` files first), validation,
and the scenario files shipped in configs/."""

from pathlib import Path

import pytest
from helpers.errors import raises_option, shown

from detnorm.cli.train import parse_config
from detnorm.config import DEFAULTS, ConfigError, build_config, load_yaml, merge, validate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_stacking_last_wins_and_flags_win(tmp_path):
    a = _write(tmp_path / "a.yaml", "norm: gn\ndepth: 18\nmodel_kwargs: {x: 1, y: 2}\n")
    b = _write(tmp_path / "b.yaml", "norm: bn\nschedule: 3x\nmodel_kwargs: {y: 3}\n")
    cfg = build_config([a, b])
    assert (cfg["norm"], cfg["depth"], cfg["schedule"]) == ("bn", 18, "3x")
    assert {k: cfg["model_kwargs"][k] for k in "xy"} == {"x": 1, "y": 3}  # merged key by key
    assert cfg["gn_groups"] == DEFAULTS["gn_groups"]
    cfg = build_config([b, a])
    assert cfg["norm"] == "gn"
    cfg = parse_config(["--config", str(a), "--config", str(b), "--norm", "ln", "--depth", "34"])
    assert (cfg["norm"], cfg["depth"], cfg["schedule"]) == ("ln", 34, "3x")


def test_embedded_preset_applies_only_without_a_dataset(tmp_path):
    from detnorm.config import EMBEDDED_PRESET

    cfg = parse_config(["--norm", "gn"])  # embedded data: the small CPU-sized run
    assert cfg["data"] is None
    for key, value in EMBEDDED_PRESET.items():
        assert cfg[key] == value, key
    assert parse_config(["--depth", "34"])["depth"] == 34  # flags still win
    coco = tmp_path / "coco"
    coco.mkdir()
    cfg = parse_config(["--data", str(coco)])  # a real dataset: the paper's recipe
    assert (cfg["depth"], cfg["train_scales"], cfg["max_steps"]) == (50, [800], None)
    conf = _write(tmp_path / "c.yaml", f"data: {coco}\n")
    assert parse_config(["--config", str(conf)])["depth"] == 50
    # the CPU scenario base states the preset's values
    cpu = load_yaml(CONFIGS / "cpu" / "base.yaml")
    assert {k: cpu[k] for k in EMBEDDED_PRESET} == EMBEDDED_PRESET


def test_base_files_load_first_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "base.yaml", "norm: gn\ndepth: 101\nseed: 3\n")
    child = _write(tmp_path / "sub" / "child.yaml", "base: ../base.yaml\ndepth: 50\n")
    assert load_yaml(child) == {"norm": "gn", "depth": 50, "seed": 3}
    loop = _write(tmp_path / "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml(loop)


def test_flags_override_store_const_flags():
    cfg = parse_config(["--no-precise-bn", "--deterministic", "--resume"])
    assert cfg["precise_bn"] is False and cfg["deterministic"] is True and cfg["resume"] == "auto"
    cfg = parse_config([])
    assert cfg["precise_bn"] is True and cfg["deterministic"] is False and cfg["resume"] is None


@pytest.mark.parametrize(
    "text, option",
    [
        ("norm: batch\n", "--norm"),
        ("fpn_norm: gn2\n", "--fpn-norm"),
        ("gn_groups: 0\n", "--gn-groups"),
        ("depth: 42\n", "--depth"),
        ("schedule: 4x\n", "--schedule"),
        ("precision: fp8\n", "--precision"),
        ("box_head: 3fc\n", "--box-head"),
        ("train_scales: []\n", "--train-scales"),
        ("lr_typo: 1\n", "unknown key 'lr_typo'"),
        ("- a\n- b\n", "must be a mapping"),
        ("norm: [\n", "not valid YAML"),
    ],
)
def test_bad_file_values_name_the_option(tmp_path, text, option):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        build_config([path])
    assert option in shown(err.value) and "\n" not in str(err.value)


def test_missing_paths_are_errors(tmp_path):
    for key in ("data", "train_ann", "val_images", "resume", "pretrained"):
        cfg = merge(DEFAULTS, {key: str(tmp_path / "nope")})
        with raises_option(f"--{key.replace('_', '-')}"):
            validate(cfg)
    with raises_option("--config: file not found"):
        build_config([tmp_path / "nope.yaml"])


SCENARIOS = sorted(p.stem for p in (CONFIGS / "coco").glob("*.yaml") if p.stem != "base")


def test_every_scenario_has_a_cpu_counterpart():
    assert len(SCENARIOS) == 9
    assert sorted(p.stem for p in (CONFIGS / "cpu").glob("*.yaml") if p.stem != "base") == SCENARIOS


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_resolve(name):
    full = merge(DEFAULTS, load_yaml(CONFIGS / "coco" / f"{name}.yaml"))
    cpu = merge(DEFAULTS, load_yaml(CONFIGS / "cpu" / f"{name}.yaml"))
    assert (full["depth"], full["devices"] * full["batch_size"], full["max_steps"]) == (
        50,
        16,
        None,
    )
    assert (cpu["depth"], cpu["devices"], cpu["data"], cpu["pretrained"]) == (18, 1, None, "none")
    assert cpu["max_steps"] <= 1000 and cpu["eval_period"] < cpu["max_steps"]
    keys = ("norm", "backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm", "box_head")
    assert {k: cpu[k] for k in keys} == {k: full[k] for k in keys}  # same norms as the scenario
    assert cpu["schedule"] == full["schedule"] == name[-2:]
    validate(cpu)  # the CPU counterpart is runnable as is (no paths it needs are missing)
    if name.startswith("scratch"):
        assert full["pretrained"] == "none" and full["trainable_backbone_layers"] == 5
    else:
        assert full["pretrained"] != "none"
