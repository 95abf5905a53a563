"""Auditing a model trained outside the toolkit: a user's nn.Module (package.module:Class),
its plain state_dict (VICTIM.CHECKPOINT) and the train records it saw (VICTIM.MEMBERS)."""

import csv
import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import run_attack
from conftest import tiny_opts
from datasets import get_dataset_info
from datasets.cifar import load_cifar10
from engine.pack import ChannelPack, ModelList, ModelPack, build_pack
from utils.errors import UsageError
from victims import build_model

# A user's module, written to a temporary folder put on sys.path as a user's package is.
_MODULE = "mia_user_nets"
_SOURCE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Net(nn.Module):
        """Packable: its layers, in order, are its forward."""

        def __init__(self, num_classes, in_features):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 64), nn.Tanh(),
                                     nn.Linear(64, num_classes))

        def forward(self, x):
            return self.net(x)


    class SkipNet(nn.Module):
        """F.relu in forward and a skip connection: packed by running its own forward on
        stacked members (ChannelPack)."""

        def __init__(self, num_classes=10, in_features=3072):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(in_features, 32), nn.Linear(32, 32)
            self.out = nn.Linear(32, num_classes)

        def forward(self, x):
            h = F.relu(self.fc1(x.flatten(1)))
            return self.out(h + F.relu(self.fc2(h)))


    class TiedNet(nn.Module):
        """Not packable: two layers share one weight (a pack would train two copies)."""

        def __init__(self, num_classes=10, in_features=3072):
            super().__init__()
            self.fc1, self.a, self.b = (nn.Linear(in_features, 32), nn.Linear(32, 32),
                                        nn.Linear(32, 32))
            self.b.weight = self.a.weight
            self.out = nn.Linear(32, num_classes)

        def forward(self, x):
            return self.out(self.b(torch.tanh(self.a(self.fc1(x.flatten(1))))))


    class NeedsWidth(nn.Module):
        def __init__(self, num_classes, width):
            super().__init__()


    class WrongOutput(Net):
        def forward(self, x):
            return super().forward(x)[:, :3]


    NOT_A_CLASS = 3
''')


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    (folder / f"{_MODULE}.py").write_text(_SOURCE)
    sys.path.insert(0, str(folder))
    yield _MODULE
    sys.path.remove(str(folder))
    sys.modules.pop(_MODULE, None)


def _run(capsys, opts):
    code = run_attack.main(opts)
    return code, capsys.readouterr().err


def _train_own_way(data_root, members, epochs=20, seed=0):
    """A user's training, no toolkit engine: Net on CIFAR-10 train records `members`,
    normalised as the toolkit feeds its victim (the data set's mean and std); its
    state_dict."""
    import mia_user_nets

    raw = load_cifar10(data_root, download=False)
    info = get_dataset_info("cifar10")
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    x = (raw["train_x"][members].float() / 255 - mean) / std
    y = raw["train_y"][members]
    torch.manual_seed(seed)
    model = mia_user_nets.Net(num_classes=10, in_features=3072)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small steps: more threads only contend on a shared CPU
    try:
        for _ in range(epochs):
            for batch in torch.randperm(len(y)).split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.state_dict()


def test_audit_a_model_trained_elsewhere(data_root, user_module, tmp_path, capsys):
    members = np.sort(np.random.default_rng(7).choice(50000, 1000, replace=False))
    state = _train_own_way(data_root, torch.as_tensor(members))
    torch.save(state, tmp_path / "model.pt")
    np.save(tmp_path / "members.npy", np.random.default_rng(1).permutation(members))
    out = tmp_path / "run"
    opts = tiny_opts(data_root, out, **{
        "VICTIM.MODEL.ARCH": f"{user_module}:Net", "VICTIM.CHECKPOINT": str(tmp_path / "model.pt"),
        "VICTIM.MEMBERS": str(tmp_path / "members.npy"), "VICTIM.TRAIN.SET_SIZE": "1000",
        "VICTIM.TRAIN.NUM_EPOCHS": "20",
        "VICTIM.OPTIMIZER.ALPHA": "0.001", "ATTACKER.METHODS": "[shokri,loss]",
        "ATTACKER.TRAIN.NUM_EPOCHS": "8", "NUM_THREADS": "1"})
    code, err = _run(capsys, opts)
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "scores.csv")))
    scored_in = {int(r["index"]) for r in rows if r["membership"] == "1"}
    assert len(scored_in) == 1000 and scored_in == set(members.tolist())
    assert sum(r["membership"] == "0" for r in rows) == 1000
    splits = np.load(out / "splits.npz")
    assert np.array_equal(splits["victim_train"], members)
    shadow_pools = np.r_[splits["shadow_in_pool"], splits["shadow_out_pool"]]
    assert not np.intersect1d(shadow_pools, members).size and len(shadow_pools) == 49000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["victim"]["train_size"] == 1000 and metrics["victim"]["train_accuracy"] > 0.9
    assert metrics["victim"]["source"].endswith("model.pt")
    assert all(s["train_size"] == 1000 for s in metrics["shadows"])  # sized as the victim
    assert metrics["overall"]["auc"] > 0.6, metrics["overall"]
    log = (out / "run.log").read_text()
    assert "does not train in packs" not in log and "not this toolkit's checkpoint" not in log
    assert "train\tvictim" not in (out / "attack.log.tsv").read_text()  # loaded, not trained



def test_members_content_is_in_the_fingerprints(tmp_path):
    from configs.config import build_cfg
    from engine.shadows import shadow_fingerprint
    from utils.fingerprint import fingerprint

    path = tmp_path / "members.npy"
    np.save(path, np.arange(20))
    cfg, _ = build_cfg("", _npz_opts(tmp_path, **{"VICTIM.MEMBERS": str(path),
                                                  "VICTIM.TRAIN.SET_SIZE": "20",
                                                  "DATASET.VICTIM_POOL_SIZE": "20"}))
    before = (fingerprint(cfg, ("VICTIM",)), shadow_fingerprint(cfg))
    np.save(path, np.arange(1, 21))  # the same name and count, other records
    after = (fingerprint(cfg, ("VICTIM",)), shadow_fingerprint(cfg))
    assert before[0] != after[0] and before[1] != after[1]
    assert "sha256" in after[1]["VICTIM.MEMBERS"] and str(path) in after[1]["VICTIM.MEMBERS"]


def test_user_module_packs_or_trains_one_by_one(user_module, mia_warnings):
    x = torch.randn(20, 3, 8, 8)
    packable = [build_model(f"{user_module}:Net", 10, (3, 8, 8)) for _ in range(2)]
    assert isinstance(build_pack(packable, x, name=f"{user_module}:Net"), ModelPack)
    skip = [build_model(f"{user_module}:SkipNet", 10, (3, 8, 8)) for _ in range(2)]
    assert isinstance(build_pack(skip, x, name=f"{user_module}:SkipNet"), ChannelPack)
    tied = [build_model(f"{user_module}:TiedNet", 10, (3, 8, 8)) for _ in range(3)]
    for _ in range(2):  # said once per architecture, however many packs
        assert isinstance(build_pack(tied, x, name=f"{user_module}:TiedNet"), ModelList)
    said = [m for m in mia_warnings if "does not train in packs" in m]
    assert len(said) == 1 and f"{user_module}:TiedNet" in said[0] and "one by one" in said[0]


def test_run_with_an_unpackable_user_module(data_root, user_module, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run(capsys, tiny_opts(data_root, out, **{
        "VICTIM.MODEL.ARCH": f"{user_module}:TiedNet", "VICTIM.TRAIN.SET_SIZE": "200",
        "VICTIM.TRAIN.NUM_EPOCHS": "2", "SHADOW.NUM_MODELS": "2",
        "ATTACKER.TRAIN.NUM_EPOCHS": "1", "ATTACKER.TEST.BOOTSTRAP": "0", "NUM_THREADS": "1"}))
    assert code == 0, err
    log = (out / "run.log").read_text()
    said = [line for line in log.splitlines() if "does not train in packs" in line]
    assert len(said) == 1 and "TiedNet" in said[0] and "one by one" in said[0]
    assert "TiedNet" in (out / "config.yaml").read_text()


def _tiny_npz(tmp_path, n_train=120, n_test=40):
    """A small image data set (DATASET.NAME npz) so that error runs take no time to load."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(n_train) % 4, x_test=rng.integers(0, 256, (n_test, 8, 8, 3),
                                                                  dtype=np.uint8),
             y_test=np.arange(n_test) % 4)
    return path


def _npz_opts(tmp_path, **extra):
    opts = {"DATASET.NAME": "npz", "DATASET.PATH": str(_tiny_npz(tmp_path)),
            "OUTPUT_DIR": str(tmp_path / "run"), "DATASET.VICTIM_POOL_SIZE": "30",
            "VICTIM.TRAIN.SET_SIZE": "30", "VICTIM.TRAIN.NUM_EPOCHS": "1", "SHADOW.NUM_MODELS": "1",
            "ATTACKER.TRAIN.NUM_EPOCHS": "1", "NUM_THREADS": "1"}
    opts.update(extra)
    return [w for kv in opts.items() for w in kv]


@pytest.mark.parametrize("arch,says", [
    ("no_such_package.nets:Net", "cannot import module 'no_such_package.nets'"),
    (f"{_MODULE}:Missing", f"module '{_MODULE}'"),
    (f"{_MODULE}:NOT_A_CLASS", "is not an nn.Module class"),
    (f"{_MODULE}:NeedsWidth", "cannot build"),
    (f"{_MODULE}:WrongOutput", "expected (2, 4) logits"),
])
def test_a_module_that_cannot_be_used_is_one_line(arch, says, user_module, tmp_path, capsys):
    code, err = _run(capsys, _npz_opts(tmp_path, **{"VICTIM.MODEL.ARCH": arch}))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "MODEL.ARCH" in err and says in err and arch.split(":")[0] in err
    assert not (tmp_path / "run").exists()  # stopped before the run folder is written


def test_arch_syntax_is_checked_before_anything_runs(tmp_path, capsys):
    code, err = _run(capsys, _npz_opts(tmp_path, **{"VICTIM.MODEL.ARCH": "nets.Net"}))
    assert code == 2 and "VICTIM.MODEL.ARCH: bad value 'nets.Net'" in err
    assert "package.module:Class" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("change,says", [
    (lambda s: s.pop("net.1.weight"), "lacks 'net.1.weight' (64, 192)"),
    (lambda s: s.update({"net.3.weight": torch.zeros(5, 64)}),
     "'net.3.weight' is (5, 64) there, (4, 64) in"),
    (lambda s: s.update({"extra.bias": torch.zeros(3)}), "has 'extra.bias'"),
])
def test_a_state_dict_that_does_not_fit_names_the_key(change, says, user_module, tmp_path,
                                                      capsys):
    state = build_model(f"{user_module}:Net", 4, (3, 8, 8)).state_dict()
    change(state)
    torch.save({"model": state}, tmp_path / "w.pt")  # a dict holding it under 'model'
    code, err = _run(capsys, _npz_opts(tmp_path, **{
        "VICTIM.MODEL.ARCH": f"{user_module}:Net", "VICTIM.CHECKPOINT": str(tmp_path / "w.pt")}))
    assert code == 2 and err.count("\n") == 1 and "VICTIM.CHECKPOINT" in err, err
    assert says in err


@pytest.mark.parametrize("members,says", [
    (np.array([0, 5, 120, 130]), "2 indices outside 0 .. 119 (the train split has 120 records), "
                                 "e.g. 120"),
    (np.array([3, 4, 4, 9, 9, 9]), "repeats 2 indices (e.g. 4, 3 times)"),
    (np.array([0.0, 1.5]), "holds float64 values; expected integer"),
    (np.arange(41), "its 41 records leave 79 of npz's 120 train records for the shadow pools, "
                    "whose halves (39) cannot give each shadow 41 records"),
])
def test_bad_members_are_one_line_with_numbers(members, says, tmp_path, capsys):
    np.save(tmp_path / "members.npy", members)
    code, err = _run(capsys, _npz_opts(tmp_path, **{
        "VICTIM.MEMBERS": str(tmp_path / "members.npy"), "DATASET.VICTIM_POOL_SIZE": "15000",
        "VICTIM.TRAIN.SET_SIZE": "15000"}))
    assert code == 2 and err.count("\n") == 1 and "VICTIM.MEMBERS" in err, err
    assert says in err and not (tmp_path / "run").exists()


def test_members_as_text_and_npz_size_the_victim(tmp_path):
    from configs.config import build_cfg

    (tmp_path / "m.txt").write_text("\n".join(map(str, [7, 3, 11, 2])) + "\n")
    np.savez(tmp_path / "m.npz", members=np.array([7, 3, 11, 2]), other=np.zeros(3))
    for name in ("m.txt", "m.npz"):
        cfg, derived = build_cfg("", _npz_opts(tmp_path, **{
            "VICTIM.MEMBERS": str(tmp_path / name), "DATASET.VICTIM_POOL_SIZE": "15000",
            "VICTIM.TRAIN.SET_SIZE": "15000"}))
        assert cfg.VICTIM.TRAIN.SET_SIZE == 4 and cfg.SHADOW.TRAIN.SET_SIZE == 4
        assert ("DATASET.VICTIM_POOL_SIZE", 4) in derived
    with pytest.raises(UsageError, match=r"VICTIM.TRAIN.SET_SIZE: bad value 30; allowed: 4"):
        build_cfg("", _npz_opts(tmp_path, **{"VICTIM.MEMBERS": str(tmp_path / "m.txt")}))


def test_arch_and_its_source_are_in_the_fingerprints(user_module, tmp_path, monkeypatch):
    from configs.config import build_cfg
    from engine.shadows import shadow_fingerprint

    def shadows_fp(arch):
        cfg, _ = build_cfg("", _npz_opts(tmp_path, **{"VICTIM.MODEL.ARCH": arch}))
        return shadow_fingerprint(cfg)

    net, skip = shadows_fp(f"{user_module}:Net"), shadows_fp(f"{user_module}:SkipNet")
    assert net["SHADOW.MODEL.ARCH"] == f"{user_module}:Net" and net != skip
    assert "SHADOW.MODEL.ARCH source" not in shadows_fp("simplecnn")
    module = tmp_path / "mia_edited_net.py"  # a class edited between two runs
    module.write_text(_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = shadows_fp("mia_edited_net:Net")
    module.write_text(_SOURCE.replace("64", "65"))
    after = shadows_fp("mia_edited_net:Net")
    assert before["SHADOW.MODEL.ARCH source"] != after["SHADOW.MODEL.ARCH source"]
    sys.modules.pop("mia_edited_net", None)
