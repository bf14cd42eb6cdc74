import sys
import textwrap

import pytest

from ntdmbench.models.predictor import Predictor
from ntdmbench.models.registry import MODELS, build_model
from ntdmbench.registry import Registry, UnknownNameError


def test_decorator_and_direct_registration():
    reg: Registry[type] = Registry("widget")

    @reg.register("a")
    class A:
        pass

    reg.register("b", int)
    assert reg.get("a") is A and reg.get("b") is int
    assert reg.names() == ["a", "b"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", int)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as info:
        MODELS.get("orcale")
    message = str(info.value)
    assert "unknown model 'orcale'" in message and "'oracle'" in message


def test_lazy_entry_imports_only_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_plugin_mod.py").write_text("LOADED = True\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type] = Registry("thing")
    reg.register("thing", "lazy_plugin_mod:Thing")
    assert "lazy_plugin_mod" not in sys.modules
    assert reg.get("thing").__name__ == "Thing"
    assert "lazy_plugin_mod" in sys.modules


def test_lazy_entry_that_cannot_load_names_the_target():
    reg: Registry[type] = Registry("thing")
    reg.register("ghost", "no_such_module_xyz:Thing")
    with pytest.raises(ImportError, match="no_such_module_xyz:Thing"):
        reg.get("ghost")


def test_entry_points_add_models_and_builtins_win(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    (pkg / "my_plugin").mkdir(parents=True)
    (pkg / "my_plugin" / "__init__.py").write_text(textwrap.dedent("""
        from ntdmbench.models.reference import OraclePredictor
        class MyModel(OraclePredictor):
            name = "my-model"
    """))
    dist = pkg / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ntdmbench.models]\nmy-model = my_plugin:MyModel\noracle = my_plugin:MyModel\n")
    monkeypatch.syspath_prepend(str(pkg))
    reg = Registry("model", entry_point_group="ntdmbench.models")
    reg.register("oracle", "ntdmbench.models.reference:OraclePredictor")
    assert reg.get("my-model").__name__ == "MyModel"
    assert reg.get("oracle").__name__ == "OraclePredictor"


def test_builtin_models_satisfy_the_protocol():
    for name in ("oracle", "random"):
        model = build_model(name)
        assert isinstance(model, Predictor)
        desc = model.describe()
        assert desc["name"] == name and set(desc["capabilities"]) == {"pose", "class", "amodal"}
