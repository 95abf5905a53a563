"""The first run tells the user, before the fused kernel's one-time build starts, that it
is under way and roughly how long it takes; a cached build loads without that notice."""

import logging

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

from engine import fused


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty extension cache and a kernel not yet loaded in this process."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "_state", {})
    return tmp_path


def _build_with_fake_compiler(monkeypatch, messages):
    """Runs load_kernel with torch's compiler replaced; returns (messages logged before the
    compiler was called, all messages)."""
    before = []

    def fake_load(name, **kwargs):
        before.extend(messages)
        return object()

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert fused.load_kernel() is not None
    return before, list(messages)


@pytest.fixture
def mia_infos():
    """Messages of the info lines logged on the toolkit's "mia" logger during the test."""
    messages, handler = [], logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    log = logging.getLogger("mia")
    old_level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield messages
    log.removeHandler(handler)
    log.setLevel(old_level)


def test_first_build_is_announced_before_it_starts(fresh_cache, monkeypatch, mia_infos):
    before, after = _build_with_fake_compiler(monkeypatch, mia_infos)
    assert len(before) == 1 and "one-time build" in before[0]
    assert f"about {fused._BUILD_SECONDS} s" in before[0]
    assert any("fused CPU kernel ready" in m for m in after)


def test_cached_build_loads_without_the_notice(fresh_cache, monkeypatch, mia_infos):
    name = f"mia_conv_pool_{torch.backends.cpu.get_cpu_capability().lower()}"
    (fresh_cache / "py311_cpu" / name).mkdir(parents=True)
    (fresh_cache / "py311_cpu" / name / f"{name}.so").write_bytes(b"")
    before, after = _build_with_fake_compiler(monkeypatch, mia_infos)
    assert before == []
    assert any("fused CPU kernel ready" in m for m in after)
