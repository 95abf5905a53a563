"""Config: defaults, presets, the original toolkit's commands, and one clear line per error."""

import glob
import os
import subprocess
import sys

import pytest

from configs.config import build_cfg
from configs.defaults import get_cfg
from conftest import REPO
from engine.optim import OPTIMIZERS
from utils.errors import UsageError
from victims import MODELS

PRESETS = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))


def test_defaults_are_typed_and_documented():
    src = open(os.path.join(REPO, "configs", "defaults.py")).read().splitlines()

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    for key, value in walk(get_cfg()):
        assert value is not None, f"{key} defaults to None"
        line = next(i for i, s in enumerate(src) if s.startswith(f"_C.{key} ="))
        j = line - 1
        while src[j].startswith("_C.") and not src[j].startswith("_C." + key.rsplit(".", 1)[0] + " ="):
            j -= 1  # keys that belong together share one comment
        assert src[j].lstrip().startswith("#"), f"{key} has no comment above it"


def test_get_cfg_returns_a_copy():
    a = get_cfg()
    a.SHADOW.NUM_MODELS = 99
    assert get_cfg().SHADOW.NUM_MODELS != 99


def test_shadows_follow_the_victim_by_default():
    cfg, derived = build_cfg("", ["VICTIM.TRAIN.NUM_EPOCHS", "7", "VICTIM.MODEL.ARCH", "pytorchcnn"])
    assert cfg.SHADOW.TRAIN.NUM_EPOCHS == 7 and cfg.SHADOW.MODEL.ARCH == "pytorchcnn"
    assert cfg.SHADOW.TRAIN.SET_SIZE == cfg.VICTIM.TRAIN.SET_SIZE == 15000
    assert ("SHADOW.TRAIN.NUM_EPOCHS", 7) in derived
    cfg, _ = build_cfg("", ["SHADOW.TRAIN.NUM_EPOCHS", "3"])
    assert cfg.SHADOW.TRAIN.NUM_EPOCHS == 3 and cfg.VICTIM.TRAIN.NUM_EPOCHS != 3


def test_shadows_follow_the_victims_recipe_and_shape_options():
    recipe = ["VICTIM.OPTIMIZER.NAME", "sgd", "VICTIM.OPTIMIZER.MOMENTUM", "0.9",
              "VICTIM.OPTIMIZER.NESTEROV", "True", "VICTIM.OPTIMIZER.SCHEDULER", "multistep",
              "VICTIM.OPTIMIZER.WARMUP_EPOCHS", "0.5", "VICTIM.OPTIMIZER.MILESTONES", "[10, 15]",
              "VICTIM.OPTIMIZER.LR_DECAY", "0.2", "VICTIM.TRAIN.LABEL_SMOOTHING", "0.1",
              "VICTIM.TRAIN.AUGMENT", "flip_crop", "VICTIM.MODEL.ARCH", "wrn",
              "VICTIM.MODEL.DEPTH", "16", "VICTIM.MODEL.WIDTH", "4"]
    cfg, derived = build_cfg("", recipe)
    o, t, m = cfg.SHADOW.OPTIMIZER, cfg.SHADOW.TRAIN, cfg.SHADOW.MODEL
    assert (o.NESTEROV, o.SCHEDULER, o.WARMUP_EPOCHS, o.MILESTONES, o.LR_DECAY) == (
        True, "multistep", 0.5, [10, 15], 0.2)
    assert (t.LABEL_SMOOTHING, t.AUGMENT, m.ARCH, m.DEPTH, m.WIDTH) == (
        0.1, "flip_crop", "wrn", 16, 4)
    assert ("SHADOW.TRAIN.AUGMENT", "flip_crop") in derived
    assert ("SHADOW.MODEL.DEPTH", 16) in derived
    # a shadow's own value wins; NESTEROV takes True/False though its "as victim" is empty
    cfg, _ = build_cfg("", recipe + ["SHADOW.OPTIMIZER.NESTEROV", "False",
                                     "SHADOW.TRAIN.AUGMENT", "none",
                                     "SHADOW.OPTIMIZER.SCHEDULER", "cosine"])
    assert cfg.SHADOW.OPTIMIZER.NESTEROV is False and cfg.SHADOW.TRAIN.AUGMENT == "none"
    assert cfg.SHADOW.OPTIMIZER.SCHEDULER == "cosine" and cfg.VICTIM.OPTIMIZER.NESTEROV is True
    # another architecture takes its own depth and width
    cfg, _ = build_cfg("", recipe + ["SHADOW.MODEL.ARCH", "resnet18"])
    assert (cfg.SHADOW.MODEL.DEPTH, cfg.SHADOW.MODEL.WIDTH) == (-1, -1)
    # the defaults keep today's recipe: no schedule, no augmentation, plain momentum
    cfg, _ = build_cfg("", [])
    assert (cfg.SHADOW.OPTIMIZER.SCHEDULER, cfg.SHADOW.OPTIMIZER.WARMUP_EPOCHS,
            cfg.SHADOW.OPTIMIZER.NESTEROV, cfg.SHADOW.TRAIN.AUGMENT,
            cfg.SHADOW.TRAIN.LABEL_SMOOTHING) == ("none", 0.0, False, "none", 0.0)


def test_recipe_keys_are_part_of_the_victim_and_shadow_fingerprints():
    from engine.shadows import shadow_fingerprint
    from engine.victim import VICTIM_KEYS
    from utils.fingerprint import fingerprint

    base, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/x", "VICTIM.TRAIN.SET_SIZE", "2500"])
    for key, value in (("VICTIM.TRAIN.AUGMENT", "flip"), ("VICTIM.OPTIMIZER.SCHEDULER", "cosine"),
                       ("VICTIM.TRAIN.LABEL_SMOOTHING", "0.1"),
                       ("VICTIM.OPTIMIZER.WARMUP_EPOCHS", "1"), ("VICTIM.TRAIN.MIXUP_ALPHA", "0.2"),
                       ("VICTIM.TRAIN.EARLY_STOP_PATIENCE", "2")):
        cfg, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/x", "VICTIM.TRAIN.SET_SIZE", "2500", key,
                                value])
        assert fingerprint(cfg, VICTIM_KEYS) != fingerprint(base, VICTIM_KEYS), key
        assert shadow_fingerprint(cfg) != shadow_fingerprint(base), key  # shadows follow
    # keys added later are absent while off, so run folders made before them stay valid
    for fp in (fingerprint(base, VICTIM_KEYS), shadow_fingerprint(base)):
        assert not [k for k in fp if "MIXUP" in k or "EARLY_STOP" in k]
    cfg, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/x", "VICTIM.TRAIN.SET_SIZE", "2500",
                            "VICTIM.TRAIN.EARLY_STOP_PATIENCE", "2"])
    assert shadow_fingerprint(cfg)["SHADOW.TRAIN.EARLY_STOP_RECORDS"] == 1000


def test_original_documented_command_parses():
    cfg, _ = build_cfg("", ["SHADOW.MODEL.ARCH", "simplecnn", "SHADOW.OPTIMIZER.NAME", "sgd",
                            "SHADOW.OPTIMIZER.ALPHA", "0.001"])
    assert cfg.SHADOW.OPTIMIZER.NAME == "sgd" and cfg.SHADOW.OPTIMIZER.ALPHA == 0.001


def test_int_for_float_is_coerced_on_purpose():
    cfg, _ = build_cfg("", ["SHADOW.OPTIMIZER.ALPHA", "1"])
    assert cfg.SHADOW.OPTIMIZER.ALPHA == 1.0 and isinstance(cfg.SHADOW.OPTIMIZER.ALPHA, float)


@pytest.mark.parametrize("preset", PRESETS, ids=os.path.basename)
def test_every_preset_loads_validates_and_builds(preset, tmp_path):
    cfg, _ = build_cfg(preset, ["OUTPUT_DIR", str(tmp_path)])
    cfg.freeze()
    assert cfg.SHADOW.MODEL.ARCH in MODELS and cfg.SHADOW.OPTIMIZER.NAME in OPTIMIZERS
    text = open(preset).read()
    assert "OUTPUT_DIR" not in text  # presets hold only what differs, never a machine's path


BAD = [
    (["FOO.BAR", "1"], "unknown config key 'FOO.BAR'"),
    (["SHADOW.NUM_MODEL", "3"], "did you mean SHADOW.NUM_MODELS"),
    (["SHADOW.NUM_MODELS", "many"], "SHADOW.NUM_MODELS: expected int"),
    (["SHADOW.TRAIN.ENABLE", "3"], "SHADOW.TRAIN.ENABLE: expected bool"),
    (["ATTACKER.MODEL.LAYER_DIMS", "64"], "ATTACKER.MODEL.LAYER_DIMS: expected list"),
    (["SHADOW.MODEL.ARCH", "resnet"], "SHADOW.MODEL.ARCH: bad value 'resnet'; allowed: fastnet, mlp, pytorchcnn, resnet18"),
    (["VICTIM.MODEL.ARCH", "resnet"], "VICTIM.MODEL.ARCH: bad value 'resnet'"),
    (["ATTACKER.MODEL.ARCH", "svm"], "ATTACKER.MODEL.ARCH: bad value 'svm'; allowed: fcnet"),
    (["SHADOW.OPTIMIZER.NAME", "rmsprop"], "SHADOW.OPTIMIZER.NAME: bad value 'rmsprop'; allowed: adam"),
    (["VICTIM.CRITERION", "mse"], "VICTIM.CRITERION: bad value 'mse'; allowed: ce"),
    (["ATTACKER.CRITERION", "ce"], "ATTACKER.CRITERION: bad value 'ce'; allowed: bce"),
    (["DATASET.NAME", "svhn"], "DATASET.NAME: unknown dataset 'svhn'; allowed: cifar10, cifar100"),
    (["DATASET.NAME", "npz"], "DATASET.PATH: empty; DATASET.NAME npz needs a .npz file"),
    (["DATASET.PATH", "/tmp/x.npz"], "DATASET.PATH: bad value '/tmp/x.npz'; allowed: empty"),
    (["DATASET.NAME", "purchase100"],
     "VICTIM.MODEL.ARCH: simplecnn takes images (in_channels, image_size), not records of "
     "shape (600,); allowed: mlp, simplemlp"),
    (["DATASET.NAME", "texas100", "VICTIM.MODEL.ARCH", "mlp", "SHADOW.MODEL.ARCH", "pytorchcnn"],
     "SHADOW.MODEL.ARCH: pytorchcnn takes images"),
    (["VICTIM.MODEL.LAYER_DIMS", "[64]"],
     "VICTIM.MODEL.LAYER_DIMS: simplecnn has no hidden layer widths to set"),
    (["VICTIM.MODEL.ARCH", "mlp", "VICTIM.MODEL.LAYER_DIMS", "[64, 0]"],
     "VICTIM.MODEL.LAYER_DIMS: bad value [64, 0]"),
    (["VICTIM.IN_FEATURES", "1"], "VICTIM.IN_FEATURES: bad value 1; allowed: 3 for cifar10"),
    (["DATASET.NAME", "mnist", "VICTIM.NUM_CLASSES", "100"],
     "VICTIM.NUM_CLASSES: bad value 100; allowed: 10 for mnist"),
    (["DATASET.MEAN", "[0.5]"], "DATASET.MEAN: bad value [0.5]; allowed: 3 numbers"),
    (["DATASET.NAME", "mnist", "DATASET.STD", "[0.0]"], "DATASET.STD: bad value [0.0]"),
    (["DATASET.TEST_FRACTION", "0.3"],
     "DATASET.TEST_FRACTION: bad value 0.3; allowed: -1 (cifar10 comes with its own test split)"),
    (["DATASET.NAME", "purchase100", "VICTIM.MODEL.ARCH", "mlp", "DATASET.TEST_FRACTION", "1"],
     "DATASET.TEST_FRACTION: bad value 1.0; allowed: a fraction in (0, 1), or -1: 0.2"),
    (["DATASET.NAME", "mnist", "DATASET.VICTIM_POOL_SIZE", "60000"],
     "DATASET.VICTIM_POOL_SIZE: bad value 60000; allowed: 1 .. 59998 (the rest of mnist's 60000"),
    (["DATASET.NAME", "purchase100", "VICTIM.MODEL.ARCH", "mlp",
      "DATASET.VICTIM_POOL_SIZE", "157858"],
     "DATASET.VICTIM_POOL_SIZE: bad value 157858; allowed: 1 .. 157857 (the rest of "
     "purchase100's 157859 train records"),
    (["DATASET.NAME", "texas100", "VICTIM.MODEL.ARCH", "mlp", "DATASET.TEST_FRACTION", "0.5",
      "SHADOW.TRAIN.SET_SIZE", "9333"],
     "SHADOW.TRAIN.SET_SIZE: bad value 9333; allowed: 1 .. 9332 (half of the 18665-record"),
    (["SHADOW.SAMPLING", "random_half", "SHADOW.TRAIN.SET_SIZE", "27500"],
     "SHADOW.TRAIN.SET_SIZE: bad value 27500; allowed: 1 .. 27499 (random_half: each shadow "
     "trains on half of a population of the 20000 evaluated records plus shadow-pool records"),
    (["SHADOW.SAMPLING", "random_half", "ATTACKER.RMIA.NUM_POPULATION", "25001"],
     "ATTACKER.RMIA.NUM_POPULATION: bad value 25001; allowed: 1 .. 25000 (random_half shadows "
     "take 10000 of the 35000-record shadow pool besides the 20000 evaluated records)"),
    (["ATTACKER.VICTIM_CLASSES", "[1, 1]"], "ATTACKER.VICTIM_CLASSES: bad value [1, 1]"),
    (["DATASET.NAME", "cifar100", "ATTACKER.TEST.LABELS", "[100]"],
     "ATTACKER.TEST.LABELS: bad value [100]; allowed: a list of distinct class ids in 0 .. 99"),
    (["SHADOW.TRAIN.DATASET", "svhn"], "SHADOW.TRAIN.DATASET: bad value 'svhn'"),
    (["SHADOW.TRAIN.SET_SIZE", "20000"], "SHADOW.TRAIN.SET_SIZE: bad value 20000; allowed: 1 .. 17500"),
    (["VICTIM.TRAIN.SET_SIZE", "16000"], "VICTIM.TRAIN.SET_SIZE: bad value 16000"),
    (["DATASET.VICTIM_POOL_SIZE", "50000"], "DATASET.VICTIM_POOL_SIZE: bad value 50000"),
    (["ATTACKER.VICTIM_CLASSES", "[0, 12]"], "ATTACKER.VICTIM_CLASSES: bad value [0, 12]"),
    (["ATTACKER.VICTIM_CLASSES", "[0, 1]", "ATTACKER.TEST.LABELS", "[2]"],
     "ATTACKER.TEST.LABELS: bad value [2]; allowed: a subset of ATTACKER.VICTIM_CLASSES=[0, 1]"),
    (["ATTACKER.PRED_THRESHOLD", "1.5"], "ATTACKER.PRED_THRESHOLD: bad value 1.5; allowed: a number in [0, 1]"),
    (["SHADOW.OPTIMIZER.ALPHA", "0"], "SHADOW.OPTIMIZER.ALPHA: bad value 0.0"),
    (["VICTIM.OPTIMIZER.ALPHA", "-0.1"], "VICTIM.OPTIMIZER.ALPHA: bad value -0.1"),
    (["ATTACKER.OPTIMIZER.ALPHA", "1e300"], "ATTACKER.OPTIMIZER.ALPHA: bad value 1e+300; allowed: a learning rate in (0, 1e+06]"),
    (["SHADOW.OPTIMIZER.GAMMA", "-1e-4"], "SHADOW.OPTIMIZER.GAMMA: bad value -0.0001"),
    (["ATTACKER.MODEL.LAYER_DIMS", "[64, 0]"], "ATTACKER.MODEL.LAYER_DIMS: bad value [64, 0]"),
    (["RNG_SEED", "-3"], "RNG_SEED: bad value -3"),
    (["VICTIM.TRAIN.NUM_EPOCHS", "0"], "VICTIM.TRAIN.NUM_EPOCHS: bad value 0"),
    (["SHADOW.TRAIN.BATCH_SIZE", "-5"], "SHADOW.TRAIN.BATCH_SIZE: bad value -5"),
    (["SHADOW.NUM_MODELS", "0"], "SHADOW.NUM_MODELS: bad value 0"),
    (["VICTIM.OPTIMIZER.BETAS", "[0.9]"], "VICTIM.OPTIMIZER.BETAS: bad value [0.9]"),
    (["ATTACKER.TEST.ROUTING", "top"], "ATTACKER.TEST.ROUTING: bad value 'top'; allowed: label, argmax"),
    (["DEVICE", "tpu"], "DEVICE: bad value 'tpu'"),
    (["USE_GPU", "0", "DEVICE", "cuda"], "DEVICE: bad value 'cuda'; allowed: cpu or auto while USE_GPU is 0"),
    (["VICTIM.NUM_CLASSES", "100"], "VICTIM.NUM_CLASSES: bad value 100; allowed: 10 for cifar10"),
    (["VICTIM.CHECKPOINT", "/no/such/victim.pth"], "VICTIM.CHECKPOINT: bad value '/no/such/victim.pth'"),
    (["ATTACKER.TEST.CHECKPOINT_DIR", "/no/such/dir"], "ATTACKER.TEST.CHECKPOINT_DIR: bad value"),
    (["SHADOW.TRAIN.DATA_PATH", "/no/splits.npz"], "SHADOW.TRAIN.DATA_PATH: bad value"),
    (["SHADOW.NUM_MODELS"], "KEY VALUE pairs"),
    # training recipes (engine/recipe.py) and the deep architectures' shape options
    (["VICTIM.OPTIMIZER.SCHEDULER", "step"],
     "VICTIM.OPTIMIZER.SCHEDULER: bad value 'step'; allowed: cosine, multistep, none, onecycle"),
    (["SHADOW.OPTIMIZER.SCHEDULER", "step"],
     "SHADOW.OPTIMIZER.SCHEDULER: bad value 'step'; allowed: cosine, multistep, none, onecycle "
     "(or empty: as VICTIM)"),
    (["VICTIM.OPTIMIZER.NESTEROV", "True"],
     "VICTIM.OPTIMIZER.NESTEROV: bad value True; allowed: False unless VICTIM.OPTIMIZER.NAME is "
     "sgd and MOMENTUM > 0"),
    (["VICTIM.OPTIMIZER.NAME", "sgd", "VICTIM.OPTIMIZER.MOMENTUM", "0.9",
      "SHADOW.OPTIMIZER.NESTEROV", "yes"],
     "SHADOW.OPTIMIZER.NESTEROV: bad value 'yes'; allowed: True or False (or empty: as VICTIM)"),
    (["VICTIM.OPTIMIZER.NAME", "sgd", "VICTIM.OPTIMIZER.NESTEROV", "True",
      "VICTIM.OPTIMIZER.MOMENTUM", "0.9", "SHADOW.OPTIMIZER.MOMENTUM", "0"],
     "SHADOW.OPTIMIZER.NESTEROV: bad value True; allowed: False unless SHADOW.OPTIMIZER.NAME"),
    (["VICTIM.OPTIMIZER.WARMUP_EPOCHS", "30"],
     "VICTIM.OPTIMIZER.WARMUP_EPOCHS: bad value 30.0; allowed: epochs in [0, 20]"),
    (["SHADOW.OPTIMIZER.WARMUP_EPOCHS", "-2"],
     "SHADOW.OPTIMIZER.WARMUP_EPOCHS: bad value -2.0; allowed: epochs in [0, 20] (or -1: as VICTIM)"),
    (["VICTIM.OPTIMIZER.SCHEDULER", "multistep"],
     "VICTIM.OPTIMIZER.MILESTONES: bad value []; allowed: at least one epoch for "
     "VICTIM.OPTIMIZER.SCHEDULER multistep"),
    (["VICTIM.OPTIMIZER.MILESTONES", "[5, 25]"],
     "VICTIM.OPTIMIZER.MILESTONES: bad value [5, 25]; allowed: distinct epochs in 1 .. 19"),
    (["VICTIM.OPTIMIZER.LR_DECAY", "0"],
     "VICTIM.OPTIMIZER.LR_DECAY: bad value 0.0; allowed: a factor in (0, 1]"),
    (["VICTIM.TRAIN.LABEL_SMOOTHING", "1"],
     "VICTIM.TRAIN.LABEL_SMOOTHING: bad value 1.0; allowed: a number in [0, 1)"),
    (["SHADOW.TRAIN.LABEL_SMOOTHING", "-0.5"],
     "SHADOW.TRAIN.LABEL_SMOOTHING: bad value -0.5; allowed: a number in [0, 1) (or -1: as VICTIM)"),
    (["VICTIM.TRAIN.AUGMENT", "rotate"],
     "VICTIM.TRAIN.AUGMENT: bad value 'rotate'; allowed: flip, flip_crop, none"),
    (["DATASET.NAME", "purchase100", "VICTIM.MODEL.ARCH", "mlp", "VICTIM.TRAIN.AUGMENT", "flip"],
     "VICTIM.TRAIN.AUGMENT: bad value 'flip'; allowed: none for purchase100's feature vectors"),
    (["VICTIM.MODEL.ARCH", "wrn", "VICTIM.MODEL.DEPTH", "12"],
     "VICTIM.MODEL.DEPTH: bad value 12; allowed: 6n + 4"),
    (["VICTIM.MODEL.DEPTH", "28"], "VICTIM.MODEL.DEPTH: simplecnn has no depth to set"),
    (["VICTIM.MODEL.ARCH", "wrn", "SHADOW.MODEL.ARCH", "resnet18", "VICTIM.MODEL.WIDTH", "4",
      "SHADOW.MODEL.WIDTH", "4"], "SHADOW.MODEL.WIDTH: resnet18 has no width to set"),
    (["SHADOW.MODEL.ARCH", "resnet18", "SHADOW.MODEL.LAYER_DIMS", "[8]"],
     "SHADOW.MODEL.LAYER_DIMS: bad value [8]; allowed: 4 widths for resnet18"),
]


@pytest.mark.parametrize("opts,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_names_key_value_and_allowed(opts, message):
    with pytest.raises(UsageError) as err:
        build_cfg("", opts)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("SHADOW:\n  NUM_MODELS: [1,\n")
    with pytest.raises(UsageError, match="not valid YAML at line"):
        build_cfg(str(broken))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("SHADOW:\n  NUMMODELS: 3\n")
    with pytest.raises(UsageError, match=r"unknown config key 'SHADOW.NUMMODELS' \(.*unknown.yaml\)"):
        build_cfg(str(unknown))
    with pytest.raises(UsageError, match="cannot read"):
        build_cfg(str(tmp_path / "absent.yaml"))
    override = tmp_path / "ok.yaml"
    override.write_text("SHADOW:\n  NUM_MODELS: 3\n")
    cfg, _ = build_cfg(str(override), ["SHADOW.NUM_MODELS", "5"])
    assert cfg.SHADOW.NUM_MODELS == 5  # the command line wins over the file


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, os.path.join(REPO, "run_attack.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["SHADOW.TRAIN.SET_SIZE", "99999"], "SHADOW.TRAIN.SET_SIZE"),
    (["NO.SUCH.KEY", "1"], "unknown config key"),
    (["--cfg", "/no/such.yaml"], "--cfg"),
    (["VICTIM.TRAIN.AUGMENT", "crop"], "VICTIM.TRAIN.AUGMENT: bad value 'crop'; allowed: flip, "
                                       "flip_crop, none"),
])
def test_cli_usage_errors_exit_2_with_one_line(args, message, tmp_path):
    res = _cli(*args, "OUTPUT_DIR", str(tmp_path / "run")) if args[0] != "--cfg" else _cli(*args)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()  # nothing written for a bad config


def test_cli_missing_dataset_is_a_usage_error(tmp_path):
    res = _cli("DATASET.ROOT", str(tmp_path / "nodata"), "DATASET.DOWNLOAD", "False",
               "OUTPUT_DIR", str(tmp_path / "run"))
    assert res.returncode == 2 and "DATASET.ROOT" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("name,classes,width,mean", [
    ("cifar10", 10, 3, [0.4914, 0.4822, 0.4465]), ("cifar100", 100, 3, [0.5071, 0.4865, 0.4409]),
    ("mnist", 10, 1, [0.1307]), ("fashionmnist", 10, 1, [0.286]),
    ("purchase100", 100, 600, []), ("texas100", 100, 6169, [])])
def test_classes_shapes_and_normalisation_follow_the_data_set(name, classes, width, mean):
    arch = "simplecnn" if name in ("cifar10", "cifar100", "mnist", "fashionmnist") else "mlp"
    cfg, derived = build_cfg("", ["DATASET.NAME", name, "VICTIM.MODEL.ARCH", arch])
    assert cfg.VICTIM.NUM_CLASSES == classes and cfg.VICTIM.IN_FEATURES == width
    assert cfg.DATASET.MEAN == mean and len(cfg.DATASET.STD) == len(mean)
    assert cfg.ATTACKER.VICTIM_CLASSES == cfg.ATTACKER.TEST.LABELS == list(range(classes))
    assert cfg.SHADOW.TRAIN.DATASET == cfg.ATTACKER.TEST.DATASET == name
    assert ("VICTIM.NUM_CLASSES", classes) in derived  # logged, never silently set
    assert cfg.DATASET.TEST_FRACTION == (0.2 if not mean else -1)


def test_old_keys_are_accepted_when_they_agree():
    cfg, derived = build_cfg("", ["VICTIM.NUM_CLASSES", "10", "VICTIM.IN_FEATURES", "3",
                                  "SHADOW.TRAIN.DATASET", "cifar10",
                                  "DATASET.MEAN", "[0.5, 0.5, 0.5]"])
    keys = [k for k, _ in derived]
    assert "VICTIM.NUM_CLASSES" not in keys and "DATASET.MEAN" not in keys
    assert cfg.DATASET.MEAN == [0.5, 0.5, 0.5] and "DATASET.STD" in keys


def test_mlp_widths_follow_the_victim_for_the_same_architecture():
    opts = ["DATASET.NAME", "purchase100", "VICTIM.MODEL.ARCH", "mlp",
            "VICTIM.MODEL.LAYER_DIMS", "[256, 128]"]
    cfg, _ = build_cfg("", opts)
    assert cfg.SHADOW.MODEL.LAYER_DIMS == [256, 128]
    cfg, _ = build_cfg("", opts + ["SHADOW.MODEL.ARCH", "simplemlp"])
    assert cfg.SHADOW.MODEL.LAYER_DIMS == []  # another architecture keeps its own widths


@pytest.mark.parametrize("words", [
    ["ATTACKER.METHODS", "[shokri,loss]"],
    ["ATTACKER.METHODS", "[shokri, loss]"],  # the shell's words of an unquoted list
    ["ATTACKER.METHODS", "[shokri,", "loss]"],
    ["ATTACKER.METHODS", "['shokri', 'loss']"],
])
def test_cli_list_without_quotes(words, tmp_path):
    cfg, _ = build_cfg("", words + ["OUTPUT_DIR", str(tmp_path)])
    assert cfg.ATTACKER.METHODS == ["shokri", "loss"]
    preset = tmp_path / "methods.yaml"
    preset.write_text("ATTACKER:\n  METHODS: [shokri, loss]\n")
    assert build_cfg(str(preset), ["OUTPUT_DIR", str(tmp_path)])[0].ATTACKER.METHODS == \
        cfg.ATTACKER.METHODS
    cfg, _ = build_cfg("", ["ATTACKER.MODEL.LAYER_DIMS", "[32,16]", "VICTIM.OPTIMIZER.BETAS",
                            "[0.8,0.99]"])
    assert cfg.ATTACKER.MODEL.LAYER_DIMS == [32, 16] and cfg.VICTIM.OPTIMIZER.BETAS == [0.8, 0.99]


def test_config_checks_names_without_importing_the_engine():
    code = ("import sys; from configs.config import build_cfg; build_cfg('', []); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'engine'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


def test_name_lists_match_the_registries_they_name():
    from attack_models.methods import METHOD_NAMES
    from engine.methods import METHODS
    from engine.optim import CRITERIA
    from utils.optim_names import CRITERION_NAMES, OPTIMIZER_NAMES

    assert tuple(METHODS) == METHOD_NAMES
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
    assert {k: tuple(v) for k, v in CRITERIA.items()} == CRITERION_NAMES
