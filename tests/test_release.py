"""VICTIM.OUTPUT: what the victim (and the shadows) release, and which methods run on it."""

import numpy as np
import pytest
import torch

from attack_models.methods import METHOD_NAMES, methods_for_output
from configs.config import build_cfg
from utils.errors import UsageError
from victims.release import OUTPUTS, release, release_with_logits

Z = torch.tensor([[2.0, 0.5, -1.0, 1.0], [0.0, 3.0, 0.1, 0.2]])
P = torch.softmax(Z, -1)


def test_probs_are_the_softmax_and_keep_the_logits():
    probs, z = release_with_logits(Z, "probs")
    torch.testing.assert_close(probs, P)
    assert torch.equal(z, Z)


def test_topk_keeps_the_k_largest_unnormalised():
    out = release(Z, "topk", topk=2)
    np.testing.assert_allclose(out[0], [P[0, 0], 0, 0, P[0, 3]], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0, P[1, 1], 0, P[1, 3]], rtol=1e-6)
    assert torch.equal(release(Z, "topk", topk=4), P)


def test_rounded_and_label():
    out = release(Z, "rounded", decimals=1)
    np.testing.assert_allclose(out, np.round(P.numpy(), 1), atol=1e-7)
    assert torch.equal(release(Z, "label"), torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    _, z = release_with_logits(Z, "label")  # the logits an attack reads: floored logs
    assert z[0, 0] == 0 and np.isclose(z[0, 1].item(), np.log(1e-30))


def test_argmax_survives_every_release():
    z = torch.randn(200, 10)
    for output in set(OUTPUTS) - {"rounded"}:  # rounding may tie the top two
        assert torch.equal(release(z, output, 3, 2).argmax(-1), z.argmax(-1))


def test_label_output_refuses_posterior_methods_with_one_line():
    with pytest.raises(UsageError) as e:
        build_cfg("", ["VICTIM.OUTPUT", "label", "ATTACKER.METHODS", "[shokri,correctness]"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("ATTACKER.METHODS: bad value ['shokri', 'correctness']")
    assert msg.endswith("methods that run on VICTIM.OUTPUT label: "
                        + ", ".join(methods_for_output("label")))
    build_cfg("", ["VICTIM.OUTPUT", "label", "ATTACKER.METHODS", "[correctness]"])
    for output in ("probs", "topk", "rounded"):  # every method runs on posteriors
        assert set(methods_for_output(output)) >= set(METHOD_NAMES) - {"label_only"}


@pytest.mark.parametrize("key, value", [("VICTIM.OUTPUT", "logits"), ("VICTIM.OUTPUT_TOPK", "11"),
                                        ("VICTIM.OUTPUT_TOPK", "0"),
                                        ("VICTIM.OUTPUT_DECIMALS", "-1")])
def test_bad_release_settings_are_refused(key, value):
    with pytest.raises(UsageError, match=f"^{key}: bad value"):
        build_cfg("", [key, value])


def test_release_keys_change_the_shadows_not_the_victim():
    from engine.shadows import shadow_fingerprint
    from engine.victim import _VICTIM_EXCLUDE, VICTIM_KEYS
    from utils.fingerprint import fingerprint

    a, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/x"])
    b, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/x", "VICTIM.OUTPUT", "topk"])
    assert shadow_fingerprint(a) != shadow_fingerprint(b)
    assert fingerprint(a, VICTIM_KEYS, _VICTIM_EXCLUDE) == fingerprint(b, VICTIM_KEYS,
                                                                       _VICTIM_EXCLUDE)
