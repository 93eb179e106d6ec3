import pytest

from bench.registry import Registry, RegistryError


def make():
    reg = Registry("backbone")

    @reg.register(arch="swin_s", paper="SOLIDER")
    def solider_swin_s():
        return "s"

    @reg.register("solider_swin_t", arch="swin_t")
    def _factory():
        return "t"

    reg.add("dino_swin_t", lambda: "d", arch="swin_t")
    return reg


def test_lookup_by_name_and_metadata():
    reg = make()
    e = reg.get("solider_swin_s")
    assert e.name == "solider_swin_s" and e.obj() == "s"
    assert e.meta["arch"] == "swin_s" and e.meta["paper"] == "SOLIDER"
    assert reg.get("solider_swin_t").obj() == "t"
    assert "dino_swin_t" in reg and "nope" not in reg
    assert len(reg) == 3
    assert [e.name for e in reg] == ["dino_swin_t", "solider_swin_s", "solider_swin_t"]


def test_metadata_is_read_only():
    e = make().get("solider_swin_s")
    with pytest.raises(TypeError):
        e.meta["arch"] = "swin_b"
    with pytest.raises(AttributeError):
        e.name = "other"


def test_pattern_listing():
    reg = make()
    assert reg.names("solider_*") == ["solider_swin_s", "solider_swin_t"]
    assert reg.names("*_t") == ["dino_swin_t", "solider_swin_t"]
    assert reg.names("resnet*") == []
    assert reg.names() == ["dino_swin_t", "solider_swin_s", "solider_swin_t"]


def test_duplicate_name_raises_and_keeps_first():
    reg = make()
    with pytest.raises(RegistryError, match="'solider_swin_s' is already registered"):
        reg.add("solider_swin_s", lambda: "other")
    assert reg.get("solider_swin_s").obj() == "s"


def test_unknown_name_suggests_close_matches():
    reg = make()
    with pytest.raises(RegistryError, match=r"unknown backbone 'solider_swin_x'; did you mean"):
        reg.get("solider_swin_x")
    with pytest.raises(RegistryError, match="registered backbones"):
        reg.get("resnet50")
    with pytest.raises(RegistryError, match="no task is registered yet"):
        Registry("task").get("reid")


def test_bad_names_rejected():
    reg = Registry("task")
    for bad in ("", None, 3):
        with pytest.raises(RegistryError):
            reg.add(bad, object())


def test_loader_runs_once_before_first_lookup():
    calls = []
    reg = Registry("task", loader=lambda: (calls.append(1), reg.add("reid", object())))
    assert calls == []  # constructing and registering stays lazy
    assert reg.names() == ["reid"]
    assert "reid" in reg and len(reg) == 1
    assert calls == [1]


def test_package_registries_import_lazily():
    import subprocess
    import sys
    code = ("import sys, adapters, backbones, bench.config, bench.data; "
            "print(sorted(m for m in ('torch', 'pandas', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
